//! One batch, start to finish, in named steps: decode (and enrich), claim (ledger, lake checks,
//! counts), encode, then write the lake, DynamoDB and dead-letter concurrently, and record metrics.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use schemas::dynamo;
use schemas::lake::{Partition, dead_letter_object_key};

use crate::aggregate::Counts;
use crate::decode::{DecodedBatch, DecodedEvent, InputRecord, Quarantined, decode_batch, quarantine};
use crate::enrich::{AgentCache, BatchAgents};
use crate::error::ConsumerError;
use crate::lake::{LakeRow, encode_dead_letter, encode_parquet};
use crate::ledger::Ledger;
use crate::plan::{WritePlan, objects_to_check, plan_claims, resolve};
use crate::sinks::dynamo::{Item, ItemStore, to_item, write_all};
use crate::sinks::s3::ObjectStore;

/// How often one process prunes the dedup ledger.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Settings of the batch handler (a subset of `Config`).
#[derive(Debug, Clone)]
pub struct HandlerSettings {
    pub dynamodb_ttl_days: u32,
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
        Pipeline { lake, items, ledger, agents: AgentCache::default(), settings, last_prune: Mutex::new(None) }
    }

    /// Processes one batch of records from one shard. On error nothing is reported as done:
    /// the caller retries the whole batch, and the ledger makes the retry exact.
    pub async fn process(&self, records: &[InputRecord]) -> Result<BatchReport, ConsumerError> {
        let Some(span) = Span::of(records) else { return Ok(BatchReport::default()) };
        let deadline = tokio::time::Instant::now() + self.settings.sink_budget;
        let batch = self.decode(records);
        let plan = self.claim(&batch.events, span).await?;
        let encoded = self.encode(&batch, &plan, span)?;
        let lake_rows = encoded.lake_rows;
        let written = self.write(encoded, deadline).await?;
        record_metrics(&batch, &plan);
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
        let (claims, objects) = plan_claims(events, span.first_seq, span.last_seq);
        let started = Instant::now();
        let statuses = if claims.is_empty() {
            Vec::new()
        } else {
            self.ledger
                .claim(&claims, &objects, |new| {
                    Counts::of(new.iter().map(|&i| (&*events[i].event.event_type, events[i].event.received_at)))
                })
                .await?
        };
        let mut existing = HashSet::new();
        for key in objects_to_check(&claims, &statuses) {
            if self.lake.exists(&key).await? {
                existing.insert(key);
            }
        }
        let plan = resolve(events, &claims, &statuses, &existing, span.first_seq, span.last_seq);
        self.ledger.reassign(&plan.reassign).await?;
        metrics::histogram!("consumer_sink_duration_seconds", "sink" => "postgres")
            .record(started.elapsed().as_secs_f64());
        Ok(plan)
    }

    /// Step 3: encodes everything before any write, so an encoding bug fails before side
    /// effects: one Parquet file per lake object, the DynamoDB items of every event this batch
    /// owns, and the quarantined records as dead-letter NDJSON.
    fn encode(&self, batch: &Decoded<'_>, plan: &WritePlan, span: Span<'_>) -> Result<Encoded, ConsumerError> {
        let events = &batch.events;
        let mut lake_files = Vec::with_capacity(plan.lake.len());
        let mut lake_rows = 0;
        for (key, indices) in &plan.lake {
            let rows: Vec<LakeRow<'_>> =
                indices.iter().map(|&i| LakeRow { decoded: &events[i], agent: batch.agents.get(i) }).collect();
            lake_rows += rows.len();
            lake_files.push((key.clone(), encode_parquet(&rows)?));
        }
        let items = plan
            .dynamo
            .iter()
            .map(|&i| to_item(dynamo::item(&events[i].event, self.settings.dynamodb_ttl_days)))
            .collect();
        let dead_letter = (!batch.quarantined.is_empty()).then(|| {
            let key = dead_letter_object_key(&Partition::of(Utc::now()), span.shard, span.first_seq, span.last_seq);
            (key, encode_dead_letter(&batch.quarantined))
        });
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
            Ok::<_, ConsumerError>(())
        };
        let dynamo_write = async {
            let started = Instant::now();
            write_all(&self.items, items, self.settings.dynamodb_concurrency, deadline).await?;
            metrics::histogram!("consumer_sink_duration_seconds", "sink" => "dynamodb")
                .record(started.elapsed().as_secs_f64());
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
        let (lake_result, dynamo_result, dead_letter_result) =
            tokio::join!(lake_write, dynamo_write, dead_letter_write);
        lake_result.and(dynamo_result).and(dead_letter_result)?;
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
        {
            let mut last = self.last_prune.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self.ledger.prune(self.settings.dedup_window_hours).await {
            Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned dedup ledger"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning the dedup ledger failed"),
        }
    }
}

/// Step 5, once every write succeeded: records the quarantine reasons, and the end-to-end
/// latency of the events stored for the first time.
fn record_metrics(batch: &Decoded<'_>, plan: &WritePlan) {
    for q in &batch.quarantined {
        metrics::counter!("consumer_quarantined_total", "reason" => q.reason_code.clone()).increment(1);
    }
    let now = Utc::now();
    for &i in &plan.new {
        let age = (now - batch.events[i].event.received_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!("consumer_end_to_end_latency_seconds").record(age);
    }
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
