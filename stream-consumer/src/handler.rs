//! One batch, start to finish, in named steps: decode (and enrich), claim (ledger, lake checks,
//! counts), encode, then write the lake, DynamoDB and dead-letter concurrently, and record metrics.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use schemas::dynamo;
use schemas::lake::{Partition, dead_letter_object_key};

use crate::aggregate::{Counts, Fact};
use crate::decode::{DecodedBatch, DecodedEvent, InputRecord, Quarantined, decode_batch, quarantine};
use crate::enrich::{AgentCache, BatchAgents};
use crate::error::ConsumerError;
use crate::lake::{LakeRow, encode_dead_letter, encode_parquet};
use crate::ledger::Ledger;
use crate::plan::{WritePlan, objects_to_check, plan_claims, resolve};
use crate::sinks::dynamo::{Item, ItemStore, to_item, write_all};
use crate::sinks::s3::ObjectStore;
use crate::site_ttl::SiteTtl;

/// How often one process prunes the dedup ledger.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// How often one process folds the aggregates' per-batch rows into their rolled-up rows
/// (`Ledger::rollup`). Readers see every batch at once either way (the aggregates are views of
/// both); rolling up often keeps those views, and each rollup, small.
pub const ROLLUP_EVERY: Duration = Duration::from_secs(2);

/// How often one process asks the ledger whether its planner statistics are due
/// (`Ledger::refresh_statistics`): a catalog query, and an ANALYZE only when a partition grew by
/// 10 % since the last one. Often enough that a new day's partition is analyzed within seconds
/// of passing 1,000 rows, before a scan of it could cost more than an index lookup.
pub const STATISTICS_EVERY: Duration = Duration::from_secs(15);

/// The histogram of a batch's time by stage (`stage` label), on Prometheus locally and in EMF
/// on Lambda like every `_seconds` histogram.
pub const STAGE_DURATION: &str = "consumer_stage_duration_seconds";

/// The stages of [`Pipeline::process`] in [`STAGE_DURATION`], in batch order; each is recorded
/// once per successful batch. What each one times, and why the cuts are where they are:
///
/// * `decode`: records → events (envelope, contract rules, in-batch duplicates, quarantine) and
///   the user-agent facts.
/// * `claim`: building the claims, then the ledger's one PostgreSQL transaction — lake objects
///   registered, the claim `INSERT`, the counts upsert and the `COMMIT` — minus `aggregate`. The upsert and the commit
///   happen inside [`Ledger::claim`], which has no hook to time them apart, so they stay here.
/// * `aggregate`: [`Counts::of`] over the events claimed just now, pure CPU; it runs inside the
///   open transaction (between the claim and the upsert) and is taken out of `claim`.
/// * `lake_check`: `HeadObject` of the objects an earlier attempt was assigned, the plan, and the
///   ledger's `reassign`: near zero unless batches are redelivered.
/// * `parquet`: encoding the Parquet file of every lake object.
/// * `items`: building the DynamoDB items (and the dead-letter NDJSON, when there is any).
/// * `write`: the wall time of the concurrent writes below, so that the stages above plus
///   `write` add up to the batch.
/// * `s3`, `dynamodb`: each half of `write` on its own (`PutObject` of the lake files,
///   `BatchWriteItem` of the items with its retries). They overlap, so their sum exceeds `write`.
///
/// Four more are recorded only when they happen: `prune` (the ledger's pruning, at most every
/// ten minutes per process, in the batch that triggers it), `rollup` (folding the aggregates'
/// per-batch rows, at most every [`ROLLUP_EVERY`] per process), `statistics` (an ANALYZE of
/// the ledger, when [`Ledger::refresh_statistics`] found one due) and, in the local runner only,
/// `checkpoint` (saving the shard's checkpoint in PostgreSQL after the batch; on Lambda the
/// event source mapping checkpoints, outside the function).
pub const STAGES: [&str; 9] =
    ["decode", "claim", "aggregate", "lake_check", "parquet", "items", "write", "s3", "dynamodb"];

/// Records `elapsed` as the time of `stage` in [`STAGE_DURATION`].
pub fn record_stage(stage: &'static str, elapsed: Duration) {
    metrics::histogram!(STAGE_DURATION, "stage" => stage).record(elapsed.as_secs_f64());
}

/// Settings of the batch handler (a subset of `Config`).
#[derive(Debug, Clone)]
pub struct HandlerSettings {
    /// Item lifetime per site (`DYNAMODB_TTL_DAYS`, a site's `dynamodb_ttl_days`).
    pub dynamodb_ttl: SiteTtl,
    pub dynamodb_concurrency: usize,
    pub sink_budget: Duration,
    pub dedup_window_hours: u32,
}

/// The stores and caches one process keeps across batches.
pub struct Pipeline<O: ObjectStore, D: ItemStore, L: Ledger> {
    pub lake: O,
    pub items: D,
    pub ledger: L,
    pub agents: AgentCache,
    pub settings: HandlerSettings,
    last_prune: Mutex<Option<Instant>>,
    last_rollup: Mutex<Option<Instant>>,
    last_statistics: Mutex<Option<Instant>>,
}

/// What a batch did, for logs, metrics and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub records: usize,
    pub bytes: usize,
    /// Events claimed for the first time (counted in PostgreSQL).
    pub new_events: usize,
    /// Events this batch owns and (re)wrote to DynamoDB.
    pub owned_events: usize,
    pub duplicates_in_batch: usize,
    pub duplicates_in_window: usize,
    pub quarantined: usize,
    /// Keys of the lake objects written.
    pub lake_objects: Vec<String>,
    pub lake_rows: usize,
    pub dead_letter_object: Option<String>,
}

/// Where a batch sits on its shard: the first record's shard, the first and last sequence numbers.
#[derive(Clone, Copy)]
struct Span<'r> {
    shard: &'r str,
    first_seq: &'r str,
    last_seq: &'r str,
}

impl<'r> Span<'r> {
    fn of(records: &'r [InputRecord]) -> Option<Self> {
        let (first, last) = (records.first()?, records.last()?);
        Some(Span { shard: &first.shard_id, first_seq: &first.sequence_number, last_seq: &last.sequence_number })
    }
}

/// A decoded batch: its events (unique by `event_id`, in stream order, borrowing the records),
/// their user-agent facts by index, and the records quarantined.
struct Decoded<'r> {
    events: Vec<DecodedEvent<'r>>,
    agents: BatchAgents,
    quarantined: Vec<Quarantined>,
    duplicates_in_batch: usize,
}

/// Everything a batch writes, encoded.
struct Encoded {
    /// (object key, Parquet bytes), in key order.
    lake_files: Vec<(String, Bytes)>,
    lake_rows: usize,
    items: Vec<Item>,
    /// (object key, NDJSON bytes) when records were quarantined.
    dead_letter: Option<(String, Bytes)>,
}

/// The keys a batch wrote.
struct Written {
    lake_objects: Vec<String>,
    dead_letter_object: Option<String>,
}

impl<O: ObjectStore, D: ItemStore, L: Ledger> Pipeline<O, D, L> {
    pub fn new(lake: O, items: D, ledger: L, settings: HandlerSettings) -> Self {
        Pipeline {
            lake,
            items,
            ledger,
            agents: AgentCache::default(),
            settings,
            last_prune: Mutex::new(None),
            last_rollup: Mutex::new(None),
            last_statistics: Mutex::new(None),
        }
    }

    /// Processes one batch of records from one shard. On error nothing is reported as done:
    /// the caller retries the whole batch, and the ledger makes the retry exact.
    pub async fn process(&self, records: &[InputRecord]) -> Result<BatchReport, ConsumerError> {
        let Some(span) = Span::of(records) else { return Ok(BatchReport::default()) };
        let deadline = tokio::time::Instant::now() + self.settings.sink_budget;
        let started = Instant::now();
        let batch = self.decode(records);
        record_stage("decode", started.elapsed());
        let plan = self.claim(&batch.events, span).await?;
        let encoded = self.encode(&batch, &plan, span)?;
        let lake_rows = encoded.lake_rows;
        let written = self.write(encoded, deadline).await?;
        record_metrics(&batch, &plan);
        self.maybe_rollup().await;
        self.maybe_refresh_statistics().await;
        self.maybe_prune().await;
        Ok(BatchReport {
            records: records.len(),
            bytes: records.iter().map(|r| r.data.len()).sum(),
            new_events: plan.new.len(),
            owned_events: plan.dynamo.len(),
            duplicates_in_batch: batch.duplicates_in_batch,
            duplicates_in_window: plan.duplicates,
            quarantined: batch.quarantined.len(),
            lake_objects: written.lake_objects,
            lake_rows,
            dead_letter_object: written.dead_letter_object,
        })
    }

    /// Step 1: decodes the records (quarantining what cannot be read, dropping in-batch
    /// duplicates) and looks up each event's user-agent facts.
    fn decode<'r>(&self, records: &'r [InputRecord]) -> Decoded<'r> {
        let DecodedBatch { events, quarantined, duplicates_in_batch } = decode_batch(records);
        let agents = self.agents.lookup_all(events.iter().map(|d| d.event.user_agent.as_deref()));
        Decoded { events, agents, quarantined, duplicates_in_batch }
    }

    /// Step 2: the ledger decides, transactionally, which events are ours and counts the new
    /// ones. Events an earlier attempt assigned to another lake object stay there if that object
    /// exists (one `HeadObject` each) and are reassigned to this attempt's object if it never
    /// landed. Returns what to write.
    async fn claim(&self, events: &[DecodedEvent<'_>], span: Span<'_>) -> Result<WritePlan, ConsumerError> {
        let claiming = Instant::now();
        let (claims, objects) = plan_claims(events, span.first_seq, span.last_seq);
        let started = Instant::now();
        // The counts are computed inside the ledger's transaction: timed from within, to take
        // them out of the transaction's own time.
        let aggregate_nanos = AtomicU64::new(0);
        let statuses = if claims.is_empty() {
            Vec::new()
        } else {
            self.ledger
                .claim(&claims, &objects, |new| {
                    let aggregating = Instant::now();
                    let counts = Counts::of(new.iter().map(|&i| Fact::of(&events[i].event)));
                    let nanos = u64::try_from(aggregating.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    aggregate_nanos.store(nanos, Ordering::Relaxed);
                    counts
                })
                .await?
        };
        let aggregate = Duration::from_nanos(aggregate_nanos.load(Ordering::Relaxed));
        record_stage("aggregate", aggregate);
        record_stage("claim", claiming.elapsed().saturating_sub(aggregate));
        let checking = Instant::now();
        let mut existing = HashSet::new();
        for key in objects_to_check(&claims, &statuses) {
            if self.lake.exists(&key).await? {
                existing.insert(key);
            }
        }
        let plan = resolve(events, &claims, &statuses, &existing, span.first_seq, span.last_seq);
        self.ledger.reassign(&plan.reassign).await?;
        record_stage("lake_check", checking.elapsed());
        metrics::histogram!("consumer_sink_duration_seconds", "sink" => "postgres")
            .record(started.elapsed().as_secs_f64());
        Ok(plan)
    }

    /// Step 3: encodes everything before any write, so an encoding bug fails before side
    /// effects: one Parquet file per lake object, the DynamoDB items of every event this batch
    /// owns, and the quarantined records as dead-letter NDJSON.
    fn encode(&self, batch: &Decoded<'_>, plan: &WritePlan, span: Span<'_>) -> Result<Encoded, ConsumerError> {
        let events = &batch.events;
        let started = Instant::now();
        let mut lake_files = Vec::with_capacity(plan.lake.len());
        let mut lake_rows = 0;
        for (key, indices) in &plan.lake {
            let rows: Vec<LakeRow<'_>> =
                indices.iter().map(|&i| LakeRow { decoded: &events[i], agent: batch.agents.get(i) }).collect();
            lake_rows += rows.len();
            lake_files.push((key.clone(), encode_parquet(&rows)?));
        }
        record_stage("parquet", started.elapsed());
        let started = Instant::now();
        let items = plan
            .dynamo
            .iter()
            .map(|&i| {
                let event = &events[i].event;
                to_item(dynamo::item(event, self.settings.dynamodb_ttl.days_for(event.site.as_deref())))
            })
            .collect();
        let dead_letter = (!batch.quarantined.is_empty()).then(|| {
            let key = dead_letter_object_key(&Partition::of(Utc::now()), span.shard, span.first_seq, span.last_seq);
            (key, encode_dead_letter(&batch.quarantined))
        });
        record_stage("items", started.elapsed());
        Ok(Encoded { lake_files, lake_rows, items, dead_letter })
    }

    /// Step 4: writes the lake files, the DynamoDB items and the dead-letter object
    /// concurrently; all are idempotent overwrites. Returns the keys written.
    async fn write(&self, encoded: Encoded, deadline: tokio::time::Instant) -> Result<Written, ConsumerError> {
        let Encoded { lake_files, items, dead_letter, .. } = encoded;
        let lake_write = async {
            let started = Instant::now();
            for (key, body) in &lake_files {
                self.lake.put(key, body.clone(), "application/vnd.apache.parquet").await?;
            }
            metrics::histogram!("consumer_sink_duration_seconds", "sink" => "s3")
                .record(started.elapsed().as_secs_f64());
            record_stage("s3", started.elapsed());
            Ok::<_, ConsumerError>(())
        };
        let dynamo_write = async {
            let started = Instant::now();
            write_all(&self.items, items, self.settings.dynamodb_concurrency, deadline).await?;
            metrics::histogram!("consumer_sink_duration_seconds", "sink" => "dynamodb")
                .record(started.elapsed().as_secs_f64());
            record_stage("dynamodb", started.elapsed());
            Ok(())
        };
        let dead_letter_write = async {
            if let Some((key, body)) = &dead_letter {
                self.lake.put(key, body.clone(), "application/x-ndjson").await?;
            }
            Ok(())
        };
        // `join!`, not `try_join!`: a failing sink must not cancel another sink's request in
        // flight, or that request could still land after the retry has checked for it.
        let started = Instant::now();
        let (lake_result, dynamo_result, dead_letter_result) =
            tokio::join!(lake_write, dynamo_write, dead_letter_write);
        lake_result.and(dynamo_result).and(dead_letter_result)?;
        record_stage("write", started.elapsed());
        Ok(Written {
            lake_objects: lake_files.into_iter().map(|(key, _)| key).collect(),
            dead_letter_object: dead_letter.map(|(key, _)| key),
        })
    }

    /// Sends records that kept failing to the dead-letter prefix, so the shard can move on.
    pub async fn dead_letter_batch(&self, records: &[InputRecord], why: &str) -> Result<(), ConsumerError> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else { return Ok(()) };
        let rows: Vec<_> = records.iter().map(|r| quarantine(r, "batch_failed", why.to_owned())).collect();
        let key = dead_letter_object_key(
            &Partition::of(Utc::now()),
            &first.shard_id,
            &first.sequence_number,
            &last.sequence_number,
        );
        self.lake.put(&key, encode_dead_letter(&rows), "application/x-ndjson").await?;
        metrics::counter!("consumer_quarantined_total", "reason" => "batch_failed").increment(rows.len() as u64);
        Ok(())
    }

    /// Prunes the ledger at most every [`PRUNE_EVERY`] per process; a failure only delays it.
    async fn maybe_prune(&self) {
        if !due(&self.last_prune, PRUNE_EVERY) {
            return;
        }
        let started = Instant::now();
        match self.ledger.prune(self.settings.dedup_window_hours).await {
            Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned dedup ledger"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning the dedup ledger failed"),
        }
        record_stage("prune", started.elapsed());
    }

    /// Rolls the aggregates up at most every [`ROLLUP_EVERY`] per process; a failure only delays
    /// it (the per-batch rows stay, and stay counted, until a rollup moves them).
    async fn maybe_rollup(&self) {
        if !due(&self.last_rollup, ROLLUP_EVERY) {
            return;
        }
        let started = Instant::now();
        match self.ledger.rollup().await {
            Ok(Some(moved)) => tracing::debug!(moved, "rolled up aggregates"),
            Ok(None) => tracing::debug!("another process is rolling up the aggregates"),
            Err(e) => tracing::warn!(error = %e, "rolling up the aggregates failed"),
        }
        record_stage("rollup", started.elapsed());
    }

    /// Refreshes the ledger's planner statistics when due, checking at most every
    /// [`STATISTICS_EVERY`] per process; a failure only delays it (claims stay exact, only
    /// slower).
    async fn maybe_refresh_statistics(&self) {
        if !due(&self.last_statistics, STATISTICS_EVERY) {
            return;
        }
        let started = Instant::now();
        match self.ledger.refresh_statistics().await {
            Ok(true) => {
                tracing::debug!("analyzed the dedup ledger");
                record_stage("statistics", started.elapsed());
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "analyzing the dedup ledger failed"),
        }
    }
}

/// Whether a periodic task last started at `*last` is due after `every`; if so, marks it started now.
fn due(last: &Mutex<Option<Instant>>, every: Duration) -> bool {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_some_and(|t| t.elapsed() < every) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// Most values one metric may carry in one CloudWatch Embedded Metric Format line (an EMF
/// limit); the EMF recorder drops, with an error line each, what a flush would hold beyond it.
pub const EMF_MAX_VALUES_PER_METRIC: usize = 100;

/// Step 5, once every write succeeded: records the quarantine reasons, and the end-to-end
/// latency of the events stored for the first time.
fn record_metrics(batch: &Decoded<'_>, plan: &WritePlan) {
    for q in &batch.quarantined {
        metrics::counter!("consumer_quarantined_total", "reason" => q.reason_code.clone()).increment(1);
    }
    let now = Utc::now();
    let ages = plan.new.iter().map(|&i| (now - batch.events[i].event.received_at).num_milliseconds().max(0));
    for age_ms in latency_samples(ages.collect()) {
        metrics::histogram!("consumer_end_to_end_latency_seconds").record(age_ms as f64 / 1000.0);
    }
}

/// At most [`EMF_MAX_VALUES_PER_METRIC`] of a batch's latencies, evenly spaced over their
/// sorted order, so a batch's distribution (its median, its p99) survives in one EMF line on
/// Lambda — where recording every event of a 10,000-record batch would drop all but the first
/// 100 — and the same values feed the Prometheus histogram locally.
pub fn latency_samples(mut ages_ms: Vec<i64>) -> Vec<i64> {
    let n = ages_ms.len();
    if n <= EMF_MAX_VALUES_PER_METRIC {
        return ages_ms;
    }
    ages_ms.sort_unstable();
    (0..EMF_MAX_VALUES_PER_METRIC).map(|k| ages_ms[k * (n - 1) / (EMF_MAX_VALUES_PER_METRIC - 1)]).collect()
}

/// Records the outcome of a batch in metrics and one log line.
pub fn record_outcome(shard: &str, first_seq: &str, last_seq: &str, result: &Result<BatchReport, ConsumerError>) {
    match result {
        Ok(r) => {
            metrics::counter!("consumer_batches_total", "outcome" => "ok").increment(1);
            metrics::counter!("consumer_records_total").increment(r.records as u64);
            metrics::counter!("consumer_bytes_total").increment(r.bytes as u64);
            metrics::counter!("consumer_events_stored_total").increment(r.new_events as u64);
            metrics::counter!("consumer_duplicates_total", "scope" => "batch").increment(r.duplicates_in_batch as u64);
            metrics::counter!("consumer_duplicates_total", "scope" => "window")
                .increment(r.duplicates_in_window as u64);
            tracing::info!(
                shard,
                first_seq,
                last_seq,
                records = r.records,
                new = r.new_events,
                owned = r.owned_events,
                dup_batch = r.duplicates_in_batch,
                dup_window = r.duplicates_in_window,
                quarantined = r.quarantined,
                lake_rows = r.lake_rows,
                lake_objects = r.lake_objects.len(),
                "batch done"
            );
        }
        Err(e) => {
            metrics::counter!("consumer_batches_total", "outcome" => "failed").increment(1);
            tracing::warn!(shard, first_seq, last_seq, error = %e, "batch failed");
        }
    }
}

/// The batch logic on the in-memory ledger and stores: each test names the invariant it pins
/// (ARCHITECTURE.md, "Exactly once").
#[cfg(test)]
mod tests {
    use std::ops::Range;
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use schemas::EnrichedEvent;
    use uuid::Uuid;

    use super::*;

    /// Regression (lambda-e2e): a 10,000-event batch recorded 10,000 latencies, and the EMF
    /// recorder kept the first 100 and logged an error for each of the rest.
    #[test]
    fn latency_samples_keep_the_distribution_within_the_emf_limit() {
        assert_eq!(latency_samples(vec![5, 1, 3]), [5, 1, 3]);
        let ages: Vec<i64> = (0..10_000).rev().collect();
        let samples = latency_samples(ages);
        assert_eq!(samples.len(), EMF_MAX_VALUES_PER_METRIC);
        assert_eq!((samples[0], samples[99]), (0, 9_999), "the extremes are kept");
        assert!(samples.windows(2).all(|w| w[0] <= w[1]));
        assert!((4_900..=5_100).contains(&samples[50]), "median {}", samples[50]);
    }
    use crate::in_memory::{MemoryLake, MemoryPipeline};
    use crate::testing::{raw_record, record_of, sample_event, seq, settings};

    const TYPES: [&str; 3] = ["page_view", "click", "purchase"];

    fn pipeline() -> MemoryPipeline {
        MemoryPipeline::in_memory(settings())
    }

    /// `n` fresh events of cycling types, and their records at sequence numbers `from..from + n`.
    fn batch(from: usize, n: usize) -> (Vec<EnrichedEvent<'static>>, Vec<InputRecord>) {
        let events: Vec<_> = (0..n).map(|i| sample_event(TYPES[i % TYPES.len()], None, Utc::now())).collect();
        let records = events.iter().enumerate().map(|(i, e)| record_of(&seq(from + i), e)).collect();
        (events, records)
    }

    /// Every `event_id` in every Parquet object of the lake, with repeats, sorted.
    fn lake_ids(lake: &MemoryLake) -> Vec<Uuid> {
        let mut ids = Vec::new();
        for key in lake.keys("events/") {
            let body = lake.objects()[&key].body.clone();
            for batch in ParquetRecordBatchReaderBuilder::try_new(body).unwrap().build().unwrap() {
                let batch = batch.unwrap();
                let column = batch.column_by_name("event_id").unwrap().as_string::<i32>().clone();
                ids.extend(column.iter().map(|id| id.unwrap().parse::<Uuid>().unwrap()));
            }
        }
        ids.sort();
        ids
    }

    /// The invariant every scenario ends on: each of `events` is once in the lake, once in
    /// DynamoDB and counted once (per type and per type × hour), and nothing else is stored.
    fn assert_stored_once(p: &MemoryPipeline, events: &[EnrichedEvent<'_>], context: &str) {
        let mut expected: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        expected.sort();
        assert_eq!(lake_ids(&p.lake), expected, "{context}: lake");
        let items: Vec<Uuid> = p.items.items().keys().map(|k| k.parse().unwrap()).collect();
        assert_eq!(items, expected, "{context}: DynamoDB");
        let counts = Counts::of(events.iter().map(Fact::of));
        assert_eq!(p.ledger.all_counts(), counts, "{context}: counts, hourly counts, site tables");
        assert_eq!(p.ledger.claimed(), events.len(), "{context}: claims");
    }

    /// Invariant: a fresh batch is stored once in every store, counted once, and reported.
    #[tokio::test]
    async fn fresh_batch_is_stored_once_everywhere_and_counted() {
        let p = pipeline();
        let (events, records) = batch(1, 7);
        let report = p.process(&records).await.unwrap();
        assert_stored_once(&p, &events, "fresh");
        let key = p.lake.keys("events/").pop().unwrap();
        let expected = BatchReport {
            records: 7,
            bytes: records.iter().map(|r| r.data.len()).sum(),
            new_events: 7,
            owned_events: 7,
            lake_objects: vec![key.clone()],
            lake_rows: 7,
            ..BatchReport::default()
        };
        assert_eq!(report, expected);
        assert_eq!(p.lake.objects()[&key].content_type, "application/vnd.apache.parquet");
        assert!(p.lake.keys("dead-letter/").is_empty());
    }

    /// Invariant: an empty batch touches no store.
    #[tokio::test]
    async fn empty_batch_does_nothing() {
        let p = pipeline();
        assert_eq!(p.process(&[]).await.unwrap(), BatchReport::default());
        assert!(p.lake.puts().is_empty() && p.items.writes() == 0 && p.ledger.claimed() == 0);
    }

    /// Invariant: the same batch redelivered changes nothing: the same object is overwritten
    /// with identical bytes, the items are overwritten, and nothing is counted again.
    #[tokio::test]
    async fn identical_redelivery_changes_nothing() {
        let p = pipeline();
        let (events, records) = batch(1, 7);
        let first = p.process(&records).await.unwrap();
        let (objects, items) = (p.lake.objects(), p.items.items());
        let again = p.process(&records).await.unwrap();
        assert_eq!((again.new_events, again.owned_events, again.duplicates_in_window), (0, 7, 0));
        assert_eq!(again.lake_objects, first.lake_objects);
        assert_eq!(p.lake.puts(), [first.lake_objects.clone(), first.lake_objects].concat(), "same key twice");
        assert_eq!(p.lake.objects(), objects, "identical bytes");
        assert_eq!(p.items.items(), items);
        assert_eq!(p.items.writes(), 14);
        assert_stored_once(&p, &events, "redelivered");
    }

    /// A failure to inject into one store operation, for the next call only.
    #[derive(Debug, Clone, Copy)]
    enum Fault {
        LakePut,
        LakeHead,
        Items,
        Claim,
        Reassign,
    }

    impl Fault {
        fn arm(self, p: &MemoryPipeline) {
            match self {
                Fault::LakePut => p.lake.put_faults.fail_next(1),
                Fault::LakeHead => p.lake.head_faults.fail_next(1),
                Fault::Items => p.items.faults.fail_next(1),
                Fault::Claim => p.ledger.claim_faults.fail_next(1),
                Fault::Reassign => p.ledger.reassign_faults.fail_next(1),
            }
        }
    }

    /// One delivery of a part of the batch: the records, a fault to inject, whether it succeeds.
    type Delivery = (Range<usize>, Option<Fault>, bool);

    /// Scenarios of one 6-record batch delivered, failing and redelivered in parts (a suffix,
    /// bisected halves, the whole again), and the number of lake objects it must end with.
    const SCENARIOS: &[(&str, &[Delivery], usize)] = &[
        ("suffix after success: already in the lake", &[(0..6, None, true), (3..6, None, true)], 1),
        ("S3 failed, whole batch retried", &[(0..6, Some(Fault::LakePut), false), (0..6, None, true)], 1),
        (
            "S3 failed, bisected: both halves reassigned",
            &[(0..6, Some(Fault::LakePut), false), (3..6, None, true), (0..3, None, true)],
            2,
        ),
        (
            "DynamoDB failed after the lake landed, bisected",
            &[(0..6, Some(Fault::Items), false), (3..6, None, true), (0..3, None, true)],
            1,
        ),
        ("DynamoDB failed, whole batch retried", &[(0..6, Some(Fault::Items), false), (0..6, None, true)], 1),
        (
            "claim failed, suffix then whole",
            &[(0..6, Some(Fault::Claim), false), (3..6, None, true), (0..6, None, true)],
            2,
        ),
        (
            "S3 failed, then HeadObject failed on the suffix",
            &[
                (0..6, Some(Fault::LakePut), false),
                (3..6, Some(Fault::LakeHead), false),
                (3..6, None, true),
                (0..3, None, true),
            ],
            2,
        ),
        (
            "S3 failed, then the reassignment failed, then whole",
            &[
                (0..6, Some(Fault::LakePut), false),
                (3..6, Some(Fault::Reassign), false),
                (3..6, None, true),
                (0..6, None, true),
            ],
            2,
        ),
    ];

    /// Invariant: whatever part of a batch fails and whatever parts come back, every event ends
    /// once in every store and is counted once.
    #[tokio::test]
    async fn redelivery_after_partial_failure_stays_exact() {
        for (name, deliveries, objects) in SCENARIOS {
            let p = pipeline();
            let (events, records) = batch(1, 6);
            for (step, (range, fault, succeeds)) in deliveries.iter().enumerate() {
                if let Some(fault) = fault {
                    fault.arm(&p);
                }
                let result = p.process(&records[range.clone()]).await;
                assert_eq!(result.is_ok(), *succeeds, "{name}, delivery {step}: {result:?}");
            }
            assert_stored_once(&p, &events, name);
            assert_eq!(p.lake.keys("events/").len(), *objects, "{name}: lake objects");
        }
    }

    /// Invariant: events whose first object never landed move to the object that holds them
    /// (the ledger points at it, and a later redelivery finds them there).
    #[tokio::test]
    async fn events_of_an_object_that_never_landed_are_reassigned() {
        let p = pipeline();
        let (events, records) = batch(1, 4);
        p.lake.put_faults.fail_next(1);
        p.process(&records).await.unwrap_err();
        let first_key = p.ledger.object_of(events[0].event_id).unwrap();
        let suffix = p.process(&records[2..]).await.unwrap();
        assert_eq!(suffix.lake_objects.len(), 1);
        assert_ne!(suffix.lake_objects[0], first_key);
        for (i, e) in events.iter().enumerate() {
            let expected = if i < 2 { &first_key } else { &suffix.lake_objects[0] };
            assert_eq!(p.ledger.object_of(e.event_id).as_ref(), Some(expected), "event {i}");
        }
        // The whole batch again: its first object now gets the events still assigned to it.
        let whole = p.process(&records).await.unwrap();
        assert_eq!(whole.lake_objects, [first_key]);
        assert_eq!(whole.lake_rows, 2);
        assert_stored_once(&p, &events, "reassigned");
    }

    /// Invariant: a client re-sending an `event_id` in a later record is a duplicate, dropped
    /// from every store (the first record's event stays); a re-send within the batch too.
    #[tokio::test]
    async fn client_resend_in_a_later_record_is_dropped_everywhere() {
        let p = pipeline();
        let (mut events, records) = batch(1, 3);
        p.process(&records).await.unwrap();
        let original = events[0].event_id;
        let resend = sample_event("signup", Some(original), Utc::now());
        let fresh = sample_event("click", None, Utc::now());
        let later = [record_of(&seq(10), &resend), record_of(&seq(11), &fresh), record_of(&seq(12), &fresh)];
        let report = p.process(&later).await.unwrap();
        assert_eq!(
            (report.new_events, report.owned_events, report.duplicates_in_window, report.duplicates_in_batch),
            (1, 1, 1, 1)
        );
        events.push(fresh);
        assert_stored_once(&p, &events, "re-sent");
        let item = &p.items.items()[&original.to_string()];
        assert_eq!(item["event_type"].as_s().unwrap(), TYPES[0], "the first record's event stays");
    }

    /// Invariant: records that cannot be decoded go to one dead-letter object with their reason,
    /// and the batch's events are stored as usual.
    #[tokio::test]
    async fn quarantined_records_go_to_the_dead_letter_object() {
        let p = pipeline();
        let (events, mut records) = batch(1, 3);
        records.push(raw_record(&seq(4), b"not json"));
        records.push(raw_record(&seq(5), br#"{"v":99,"event":{}}"#));
        let report = p.process(&records).await.unwrap();
        assert_eq!(report.quarantined, 2);
        assert_stored_once(&p, &events, "with quarantined records");
        let key = report.dead_letter_object.unwrap();
        assert_eq!(p.lake.keys("dead-letter/"), std::slice::from_ref(&key));
        let object = &p.lake.objects()[&key];
        assert_eq!(object.content_type, "application/x-ndjson");
        let lines: Vec<serde_json::Value> = object
            .body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let sequences: Vec<&str> = lines.iter().map(|l| l["sequence_number"].as_str().unwrap()).collect();
        assert_eq!(sequences, [seq(4), seq(5)]);
        assert!(lines.iter().all(|l| l["reason_code"].as_str().is_some_and(|r| !r.is_empty())));
    }

    /// Every histogram value recorded while it is the (thread-local) recorder, with its metric
    /// name and labels. Written here because metrics-util's debugging recorder needs a feature
    /// that would rebuild metrics-util, and the Prometheus exporter on it, for the whole workspace.
    #[derive(Default, Clone)]
    struct CapturedHistograms(Arc<Mutex<Vec<(metrics::Key, f64)>>>);

    struct CapturedHistogram {
        key: metrics::Key,
        into: CapturedHistograms,
    }

    impl metrics::HistogramFn for CapturedHistogram {
        fn record(&self, value: f64) {
            self.into.0.lock().unwrap().push((self.key.clone(), value));
        }
    }

    impl metrics::Recorder for CapturedHistograms {
        fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
            metrics::Counter::noop()
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
            metrics::Histogram::from_arc(Arc::new(CapturedHistogram { key: key.clone(), into: self.clone() }))
        }
    }

    impl CapturedHistograms {
        /// (stage, seconds) of every `consumer_stage_duration_seconds` value, in recording order.
        fn stages(&self) -> Vec<(String, f64)> {
            let values = self.0.lock().unwrap();
            let stage_of = |key: &metrics::Key| {
                key.labels().find(|l| l.key() == "stage").map(|l| l.value().to_owned()).unwrap_or_default()
            };
            values.iter().filter(|(key, _)| key.name() == STAGE_DURATION).map(|(k, v)| (stage_of(k), *v)).collect()
        }
    }

    /// Invariant (#21): a processed batch records the time of each of its stages once, and the
    /// sequential ones (all but the two concurrent halves of `write`) add up to no more than
    /// the batch took.
    #[test]
    fn a_batch_records_the_time_of_every_stage() {
        let p = pipeline();
        let (_, mut records) = batch(1, 50);
        records.push(raw_record(&seq(51), b"not json"));
        let recorder = CapturedHistograms::default();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let started = Instant::now();
        metrics::with_local_recorder(&recorder, || runtime.block_on(p.process(&records))).unwrap();
        let took = started.elapsed().as_secs_f64();

        let recorded = recorder.stages();
        let seconds =
            |stage: &str| -> Vec<f64> { recorded.iter().filter(|(s, _)| s == stage).map(|(_, v)| *v).collect() };
        for stage in STAGES {
            assert_eq!(seconds(stage).len(), 1, "{stage} recorded once: {recorded:?}");
        }
        assert_eq!(seconds("prune").len(), 1, "a process's first batch prunes the ledger");
        assert!(seconds("aggregate")[0] > 0.0, "the counts are timed inside the ledger's call");
        assert!(seconds("parquet")[0] > 0.0 && seconds("decode")[0] > 0.0);
        let sequential: f64 = recorded.iter().filter(|(s, _)| s != "s3" && s != "dynamodb").map(|(_, v)| v).sum();
        assert!(sequential <= took, "stages {sequential} s, batch {took} s: {recorded:?}");

        // The next batch does not prune again, and still records every stage once.
        let recorder = CapturedHistograms::default();
        let (_, records) = batch(100, 5);
        metrics::with_local_recorder(&recorder, || runtime.block_on(p.process(&records))).unwrap();
        let stages: Vec<String> = recorder.stages().into_iter().map(|(s, _)| s).collect();
        assert_eq!(stages.len(), STAGES.len(), "{stages:?}");
        assert!(STAGES.iter().all(|s| stages.iter().any(|r| r == s)), "{stages:?}");
    }

    /// Invariant: once an object is compacted, a redelivery of its batch writes nothing to the lake.
    #[tokio::test]
    async fn redelivery_after_compaction_writes_nothing_to_the_lake() {
        let p = pipeline();
        let (events, records) = batch(1, 4);
        let first = p.process(&records).await.unwrap();
        p.ledger.mark_compacted(&first.lake_objects[0]);
        let again = p.process(&records).await.unwrap();
        assert!(again.lake_objects.is_empty());
        assert_eq!(p.lake.puts().len(), 1);
        assert_eq!(again.owned_events, 4);
        assert_stored_once(&p, &events, "compacted");
    }
}
