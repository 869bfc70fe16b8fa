//! The local runner: the event source mapping, emulated — poll shards, batch, run the batch handler, checkpoint.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEventRecord;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::decode::InputRecord;
use crate::error::ConsumerError;
use crate::handler::{Pipeline, record_outcome, record_stage};
use crate::replay::{FailedBatch, on_failure_record};
use crate::sinks::SINK_RETRY;
use crate::sinks::dynamo::ItemStore;
use crate::sinks::postgres::PgLedger;
use crate::sinks::s3::ObjectStore;
use crate::sinks::sqs::FailureQueue;
use schemas::dynamo::iso_millis;

/// How often the shard list is refreshed (to find the children of a split or merge).
const SHARD_REFRESH: Duration = Duration::from_secs(2);
/// Pause between empty polls of a caught-up shard.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Most records one `GetRecords` call may return (Kinesis limit).
const GET_RECORDS_MAX: usize = 10_000;
/// What a record is assumed to weigh before a shard has answered once: a full pack, so the
/// first call cannot overshoot the byte bound.
const RECORD_BYTES_GUESS: usize = schemas::limits::PACK_MAX_BYTES;
/// How often the lag gauge is refreshed while a batch is held up.
const STALL_TICK: Duration = Duration::from_secs(1);

/// Settings of the runner (a subset of `Config`).
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub stream_name: String,
    pub batch_size: usize,
    pub batch_max_bytes: usize,
    pub batch_window: Duration,
    pub max_attempts: u32,
}

pub struct Runner<O: ObjectStore, D: ItemStore> {
    pub pipeline: Arc<Pipeline<O, D, PgLedger>>,
    pub kinesis: Client,
    pub settings: RunnerSettings,
    /// Where batches that keep failing go, if anywhere (see [`OnFailure`]).
    pub on_failure: Option<OnFailure>,
}

/// The event source mapping's bounded retries and on-failure destination, emulated: a batch that
/// failed `max_retry_attempts` retries — for any reason, an outage included — is described on
/// the queue (shard, sequence range; the records stay in the stream) and the shard moves on.
/// `replay` then re-reads and processes it, exactly once.
pub struct OnFailure {
    pub queue: FailureQueue,
    /// Retries after the first attempt (the mapping's `MaximumRetryAttempts`).
    pub max_retry_attempts: u32,
    /// The stream's ARN, for the descriptors; asked of Kinesis once.
    stream_arn: tokio::sync::OnceCell<String>,
}

impl OnFailure {
    pub fn new(queue: FailureQueue, max_retry_attempts: u32) -> Self {
        OnFailure { queue, max_retry_attempts, stream_arn: tokio::sync::OnceCell::new() }
    }
}

impl<O: ObjectStore, D: ItemStore> Runner<O, D> {
    /// Polls every shard until `shutdown` turns true; each shard task finishes its batch in hand first.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> Result<(), ConsumerError> {
        let mut running: HashSet<String> = HashSet::new();
        let mut finished: HashSet<String> = HashSet::new();
        let mut tasks: JoinSet<(String, Result<bool, ConsumerError>)> = JoinSet::new();
        loop {
            match self.list_shards().await {
                Ok(shards) => {
                    let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id()).collect();
                    for shard in &shards {
                        let id = shard.shard_id().to_owned();
                        if running.contains(&id) || finished.contains(&id) {
                            continue;
                        }
                        // A child waits until its parents are drained (or gone), as the event
                        // source mapping does, so per-key order is kept across a split or merge.
                        let parents_done = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                            .into_iter()
                            .flatten()
                            .all(|p| finished.contains(p) || !listed.contains(p));
                        if !parents_done {
                            continue;
                        }
                        running.insert(id.clone());
                        let me = self.clone();
                        let stop = shutdown.clone();
                        tasks.spawn(async move {
                            let r = me.poll_shard(&id, stop).await;
                            (id, r)
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "listing shards failed; retrying"),
            }
            let refresh = tokio::time::sleep(SHARD_REFRESH);
            tokio::pin!(refresh);
            loop {
                tokio::select! {
                    _ = &mut refresh => break,
                    _ = shutdown.changed() => {
                        if *shutdown.borrow() {
                            while let Some(done) = tasks.join_next().await {
                                if let Ok((id, Err(e))) = done { tracing::warn!(shard = %id, error = %e, "shard stopped with an error"); }
                            }
                            return Ok(());
                        }
                    }
                    Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                        match done {
                            Ok((id, Ok(true))) => { running.remove(&id); finished.insert(id); }
                            Ok((id, Ok(false))) => { running.remove(&id); }
                            Ok((id, Err(e))) => { tracing::warn!(shard = %id, error = %e, "shard poller failed; restarting"); running.remove(&id); }
                            Err(e) => tracing::error!(error = %e, "shard task panicked"),
                        }
                    }
                }
            }
        }
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, ConsumerError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            metrics::counter!("consumer_kinesis_requests_total", "op" => "ListShards").increment(1);
            let mut req = self.kinesis.list_shards();
            req = match &token {
                Some(t) => req.next_token(t),
                None => req.stream_name(&self.settings.stream_name),
            };
            let out = req.send().await.map_err(|e| kinesis_err("ListShards", "-", e))?;
            shards.extend(out.shards().iter().cloned());
            match out.next_token() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(shards),
            }
        }
    }

    /// Consumes one shard from its checkpoint. Returns `Ok(true)` once the shard is closed and
    /// fully processed, `Ok(false)` on shutdown.
    async fn poll_shard(&self, shard: &str, shutdown: watch::Receiver<bool>) -> Result<bool, ConsumerError> {
        let stream = &self.settings.stream_name;
        let ledger = &self.pipeline.ledger;
        let (checkpoint, closed) = ledger.checkpoint(stream, shard).await?;
        if closed {
            return Ok(true);
        }
        let mut iterator = Some(self.iterator(shard, checkpoint.as_deref()).await?);
        let mut record_bytes = RECORD_BYTES_GUESS;
        while !*shutdown.borrow() {
            let Some(it) = iterator.take() else { break };
            let (records, next) = self.fill_batch(shard, it, &mut record_bytes).await?;
            iterator = next;
            if records.is_empty() {
                if iterator.is_some() {
                    tokio::time::sleep(IDLE_POLL).await;
                }
                continue;
            }
            let last = records.last().map(|r| r.kinesis.sequence_number.clone());
            let oldest = records.first().map(|r| r.kinesis.approximate_arrival_timestamp.0);
            let delivery = self.deliver(shard, records, &shutdown);
            tokio::pin!(delivery);
            // A batch held up by a store outage is retried until the store is back: meanwhile the
            // lag grows, and the gauge shows it (the age of the oldest record in hand).
            let mut stalled = tokio::time::interval_at(Instant::now() + STALL_TICK, STALL_TICK);
            loop {
                tokio::select! {
                    done = &mut delivery => break done?,
                    _ = stalled.tick() => {
                        if let Some(t) = oldest.filter(|t| t.timestamp() > 0) {
                            set_lag(shard, age_ms(t));
                        }
                    }
                }
            }
            let checkpointing = Instant::now();
            match ledger.save_checkpoint(stream, shard, last.as_deref(), false).await {
                Ok(()) => record_stage("checkpoint", checkpointing.elapsed()),
                // PostgreSQL is down: the position stays in memory and is saved after the next
                // batch. The event source mapping's checkpoints do not depend on our database
                // either, so a batch given up on during the outage stays given up on (its
                // descriptor is on the on-failure queue) rather than read again once PostgreSQL
                // is back. A crash before the next save only redelivers batches: exact anyway.
                Err(e) if is_outage(&e) => {
                    tracing::warn!(shard, error = %e, "could not save the checkpoint; going on, it is saved after the next batch");
                }
                Err(e) => return Err(e),
            }
        }
        if iterator.is_none() {
            // NextShardIterator is absent only once a closed shard has been read to its end.
            ledger.save_checkpoint(stream, shard, None, true).await?;
            // A drained shard is not behind (its last MillisBehindLatest would otherwise stay
            // on the gauge, and in max(consumer_millis_behind_latest), for good).
            set_lag(shard, 0);
            tracing::info!(shard, "shard closed and drained");
            return Ok(true);
        }
        Ok(false)
    }

    async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<String, ConsumerError> {
        metrics::counter!("consumer_kinesis_requests_total", "op" => "GetShardIterator").increment(1);
        let req = self.kinesis.get_shard_iterator().stream_name(&self.settings.stream_name).shard_id(shard);
        let req = match after {
            Some(seq) => req.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(seq),
            None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = req.send().await.map_err(|e| kinesis_err("GetShardIterator", shard, e))?;
        out.shard_iterator().map(str::to_owned).ok_or_else(|| ConsumerError::Kinesis {
            op: "GetShardIterator",
            shard: shard.to_owned(),
            message: "no iterator returned".into(),
        })
    }

    /// Reads until the batch is full, the window has passed, or the shard is caught up.
    /// `record_bytes` is the shard's latest mean record size, kept from batch to batch.
    async fn fill_batch(
        &self,
        shard: &str,
        mut iterator: String,
        record_bytes: &mut usize,
    ) -> Result<(Vec<KinesisEventRecord>, Option<String>), ConsumerError> {
        let started = Instant::now();
        let mut batch: Vec<KinesisEventRecord> = Vec::new();
        let mut bytes = 0;
        let mut attempt = 0;
        loop {
            let want = records_to_ask(
                self.settings.batch_size - batch.len(),
                self.settings.batch_max_bytes.saturating_sub(bytes),
                *record_bytes,
            );
            metrics::counter!("consumer_kinesis_requests_total", "op" => "GetRecords").increment(1);
            let out = match self.kinesis.get_records().shard_iterator(&iterator).limit(want).send().await {
                Ok(out) => out,
                Err(e) if attempt < 20 => {
                    tracing::warn!(shard, error = %aws_sdk_kinesis::error::DisplayErrorContext(&e), "GetRecords failed; backing off");
                    tokio::time::sleep(SINK_RETRY.backoff(attempt)).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(kinesis_err("GetRecords", shard, e)),
            };
            let behind = out.millis_behind_latest().unwrap_or(0);
            // MillisBehindLatest is how far the end of this response is from the tip; emulators
            // (kinesalite) always say 0. The gauge also takes the age of the newest record read,
            // about the same figure on AWS when behind, and the real lag locally.
            let newest_age = out
                .records()
                .last()
                .and_then(|r| r.approximate_arrival_timestamp())
                .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                .map_or(0, age_ms);
            set_lag(shard, behind.max(newest_age));
            let answered: usize = out.records().iter().map(|r| r.data().as_ref().len()).sum();
            if let Some(mean) = answered.checked_div(out.records().len()) {
                *record_bytes = mean.max(1);
            }
            bytes += answered;
            for r in out.records() {
                let mut rec = KinesisEventRecord::default();
                rec.event_id = Some(format!("{shard}:{}", r.sequence_number()));
                rec.event_source = Some("aws:kinesis".into());
                rec.kinesis.sequence_number = r.sequence_number().to_owned();
                rec.kinesis.partition_key = r.partition_key().unwrap_or_default().to_owned();
                rec.kinesis.data.0 = r.data().as_ref().to_vec();
                if let Some(t) = r.approximate_arrival_timestamp() {
                    rec.kinesis.approximate_arrival_timestamp.0 =
                        chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or_default();
                }
                batch.push(rec);
            }
            let next = out.next_shard_iterator().map(str::to_owned);
            // Records pack tens of events, so a count alone would let one batch grow to hundreds
            // of thousands of events; the bytes bound it as a Lambda invocation's payload does.
            let full = batch.len() >= self.settings.batch_size || bytes >= self.settings.batch_max_bytes;
            let window_over = started.elapsed() >= self.settings.batch_window;
            match next {
                None => return Ok((batch, None)),
                Some(n) if full || window_over || (behind == 0 && out.records().is_empty()) => {
                    return Ok((batch, Some(n)));
                }
                Some(n) => iterator = n,
            }
            if out.records().is_empty() {
                tokio::time::sleep(IDLE_POLL.min(self.settings.batch_window)).await;
            }
        }
    }

    /// Runs the batch through the handler until it succeeds. The handler is all or nothing (the
    /// Lambda boundary reports the first record as failed), so every attempt is the whole batch,
    /// and the ledger makes each retry exact. A failure caused by a store outage (unreachable,
    /// timing out, throttling: see [`is_outage`]) is retried for as long as the outage lasts:
    /// giving up would drop events the API acknowledged, or leave counted events out of the lake
    /// and DynamoDB. Only a failure that would repeat on every attempt sends the batch to
    /// dead-letter after `max_attempts`, so the shard can move on. On shutdown an outage retry
    /// stops (between attempts, never during one) and the batch is left to the next run.
    async fn deliver(
        &self,
        shard: &str,
        records: Vec<KinesisEventRecord>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), ConsumerError> {
        let input = crate::lambda::to_input(records);
        let (Some(first), Some(last)) = (input.first(), input.last()) else { return Ok(()) };
        let (first_seq, last_seq) = (first.sequence_number.clone(), last.sequence_number.clone());
        let (mut attempt, mut fatal) = (0u32, 0u32);
        loop {
            let result = self.pipeline.process(&input).await;
            record_outcome(shard, &first_seq, &last_seq, &result);
            let Err(e) = result else { return Ok(()) };
            attempt += 1;
            if let Some(on_failure) = self.on_failure.as_ref().filter(|o| attempt > o.max_retry_attempts) {
                return self.give_up(on_failure, shard, &input, attempt, &e, shutdown).await;
            }
            if !is_outage(&e) {
                fatal += 1;
                if fatal >= self.settings.max_attempts {
                    tracing::error!(
                        shard,
                        records = input.len(),
                        attempts = attempt,
                        error = %e,
                        "batch keeps failing; sending it to dead-letter"
                    );
                    self.pipeline.dead_letter_batch(&input, &format!("batch failed {fatal} times: {e}")).await?;
                    return Ok(());
                }
            } else if *shutdown.borrow() {
                // Stopping: the batch is not checkpointed, so the next run delivers it again.
                return Err(e);
            } else if attempt % 10 == 0 {
                tracing::warn!(shard, attempts = attempt, error = %e, "a store is unavailable; still retrying the batch");
            }
            tokio::time::sleep(SINK_RETRY.backoff(attempt + 2)).await;
        }
    }
}

impl<O: ObjectStore, D: ItemStore> Runner<O, D> {
    /// Sends the descriptor of a batch that exhausted its retries to the on-failure queue, and
    /// lets the shard move on. The send is retried until it succeeds: the descriptor is the
    /// only trace of the batch outside the stream. On shutdown the batch is left unchecked-in,
    /// so the next run delivers it again.
    async fn give_up(
        &self,
        on_failure: &OnFailure,
        shard: &str,
        input: &[InputRecord],
        attempts: u32,
        error: &ConsumerError,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), ConsumerError> {
        let (Some(first), Some(last)) = (input.first(), input.last()) else { return Ok(()) };
        let mut tries = 0;
        loop {
            let sent = async {
                let stream_arn = on_failure.stream_arn.get_or_try_init(|| self.stream_arn()).await?;
                let batch = FailedBatch {
                    shard_id: shard.to_owned(),
                    start_sequence_number: first.sequence_number.clone(),
                    end_sequence_number: last.sequence_number.clone(),
                    approximate_arrival_of_first_record: Some(iso_millis(first.approximate_arrival)),
                    approximate_arrival_of_last_record: Some(iso_millis(last.approximate_arrival)),
                    batch_size: input.len() as u64,
                    stream_arn: stream_arn.clone(),
                };
                on_failure.queue.send(on_failure_record(&batch, attempts, &error.to_string(), chrono::Utc::now())).await
            };
            match sent.await {
                Ok(()) => {
                    metrics::counter!("consumer_batches_total", "outcome" => "on_failure").increment(1);
                    tracing::error!(
                        shard,
                        first_seq = %first.sequence_number,
                        last_seq = %last.sequence_number,
                        records = input.len(),
                        attempts,
                        error = %error,
                        queue = on_failure.queue.url(),
                        "batch failed every retry; its descriptor is on the on-failure queue for `replay`"
                    );
                    return Ok(());
                }
                Err(e) if *shutdown.borrow() => return Err(e),
                Err(e) => {
                    tries += 1;
                    tracing::warn!(shard, error = %e, "could not send the batch's descriptor to the on-failure queue; retrying");
                    tokio::time::sleep(SINK_RETRY.backoff(tries + 2)).await;
                }
            }
        }
    }

    async fn stream_arn(&self) -> Result<String, ConsumerError> {
        metrics::counter!("consumer_kinesis_requests_total", "op" => "DescribeStreamSummary").increment(1);
        let out = self
            .kinesis
            .describe_stream_summary()
            .stream_name(&self.settings.stream_name)
            .send()
            .await
            .map_err(|e| kinesis_err("DescribeStreamSummary", "-", e))?;
        out.stream_description_summary().map(|s| s.stream_arn().to_owned()).ok_or_else(|| ConsumerError::Kinesis {
            op: "DescribeStreamSummary",
            shard: "-".into(),
            message: "no stream description returned".into(),
        })
    }
}

/// Whether a batch failed because a store was unavailable (unreachable, timing out, throttling,
/// shutting down), so that the same batch will succeed once it is back, rather than for a
/// reason that repeats on every attempt (encoding, a request DynamoDB rejects, a SQL error).
/// S3 errors all count as outages: the lake's requests are whole-object puts and heads, which
/// no batch content can make fail for good.
pub fn is_outage(e: &ConsumerError) -> bool {
    match e {
        ConsumerError::DynamoBudget { .. } | ConsumerError::Kinesis { .. } => true,
        ConsumerError::Postgres { source, .. } => service_kit::postgres::is_outage(source),
        ConsumerError::Kit(e) => e.is_transient(),
        ConsumerError::Sqs { .. } => true,
        ConsumerError::Dynamo(_)
        | ConsumerError::Encode(_)
        | ConsumerError::Replay(_)
        | ConsumerError::Expired { .. } => false,
    }
}

/// `consumer_millis_behind_latest` of a shard.
fn set_lag(shard: &str, millis: i64) {
    metrics::gauge!("consumer_millis_behind_latest", "shard" => shard.to_owned()).set(millis as f64);
}

/// Milliseconds since `t` (0 if `t` is in the future).
fn age_ms(t: chrono::DateTime<chrono::Utc>) -> i64 {
    (chrono::Utc::now() - t).num_milliseconds().max(0)
}

/// A Kinesis call's failure, named by operation and shard (also `replay`'s).
pub(crate) fn kinesis_err<E: std::error::Error + 'static>(
    op: &'static str,
    shard: &str,
    e: aws_sdk_kinesis::error::SdkError<E>,
) -> ConsumerError {
    ConsumerError::Kinesis {
        op,
        shard: shard.to_owned(),
        message: aws_sdk_kinesis::error::DisplayErrorContext(e).to_string(),
    }
}

/// How many records to ask `GetRecords` for: what the batch still has room for by count and by
/// bytes (at the shard's mean record size), at least one and at most the call's limit. A response
/// cannot be cut afterwards (the next iterator is past all of it), and records that pack tens of
/// events would otherwise let one call bring a batch of tens of megabytes.
fn records_to_ask(count_room: usize, bytes_room: usize, record_bytes: usize) -> i32 {
    let by_bytes = bytes_room / record_bytes.max(1);
    count_room.min(by_bytes).clamp(1, GET_RECORDS_MAX) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(source: sqlx::Error) -> ConsumerError {
        ConsumerError::Postgres { step: "claim events", source }
    }

    /// Invariant: store outages are retried until they end; only failures that repeat on every
    /// attempt may send a batch to dead-letter.
    #[test]
    fn outages_are_told_from_failures_that_repeat() {
        let s3 = ConsumerError::Kit(service_kit::KitError::S3 {
            op: "PutObject",
            key: "k".into(),
            message: "connection refused".into(),
        });
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for e in [
            s3,
            ConsumerError::DynamoBudget { remaining: 3, budget_ms: 20_000 },
            pg(sqlx::Error::PoolTimedOut),
            pg(refused.into()),
        ] {
            assert!(is_outage(&e), "{e}");
        }
        for e in [
            ConsumerError::Encode("bad column".into()),
            ConsumerError::Dynamo("ValidationException: item too large".into()),
            pg(sqlx::Error::RowNotFound),
            ConsumerError::Kit(service_kit::KitError::MissingEnv { name: "LAKE_BUCKET".into() }),
        ] {
            assert!(!is_outage(&e), "{e}");
        }
    }

    /// Invariant: a batch is bounded by bytes as well as records, even on its first call, and a
    /// call always asks for at least one record and at most the Kinesis limit.
    #[test]
    fn asks_for_what_the_batch_has_room_for() {
        let mib4 = 4 << 20;
        // A fresh shard: a full pack assumed, 64 records at most.
        assert_eq!(records_to_ask(10_000, mib4, RECORD_BYTES_GUESS), 64);
        // Packed records of ~34 KB: 121 fit; one-event records of 700 B: the count binds.
        assert_eq!(records_to_ask(10_000, mib4, 34_400), 121);
        assert_eq!(records_to_ask(1_000, mib4, 700), 1_000);
        assert_eq!(records_to_ask(usize::MAX, usize::MAX, 1), 10_000);
        // Almost full: still one record, so the batch can close.
        assert_eq!(records_to_ask(10_000, 10, 34_400), 1);
        assert_eq!(records_to_ask(10_000, mib4, 0), 10_000);
    }
}
