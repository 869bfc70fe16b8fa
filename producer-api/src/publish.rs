//! Publishing to Kinesis: packing events into records, `PutRecords` chunking, per-record retries
//! inside a time budget, and the local coalescer.

use std::sync::Arc;
use std::time::Duration;

use service_kit::retry::{ErrorClass, RetryPolicy, classify_aws_code};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use crate::ingest::PreparedRecord;

/// Most records in one `PutRecords` call (Kinesis limit).
pub const PUT_RECORDS_MAX: usize = 500;
/// Most bytes (data + partition keys) in one `PutRecords` call (Kinesis limit: 5 MiB).
pub const PUT_RECORDS_MAX_BYTES: usize = 5 * 1024 * 1024;
/// The waits between `PutRecords` attempts: 25 ms doubling up to 1 s, full jitter.
pub const PUBLISH_RETRY: RetryPolicy = RetryPolicy::new(Duration::from_millis(25), Duration::from_millis(1000));

pub use schemas::limits::PACK_MAX_BYTES;

/// One stream record as it goes to `PutRecords`: one event, or several packed by [`pack_records`].
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// The first packed event's ID as text: random, so records spread evenly over shards.
    pub partition_key: String,
    /// Encoded events separated by `\n` (an encoded event never contains one, see
    /// `schemas::encode_record`), which the consumer splits again.
    pub data: Bytes,
}

/// Packs consecutive events into stream records of at most [`PACK_MAX_BYTES`] (an event larger
/// than that travels alone). Returns each record and the range of `records` it carries.
pub fn pack_records(records: &[PreparedRecord]) -> Vec<(std::ops::Range<usize>, StreamRecord)> {
    let mut packs = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let mut end = start + 1;
        let mut bytes = records[start].data.len();
        while end < records.len() && bytes + 1 + records[end].data.len() <= PACK_MAX_BYTES {
            bytes += 1 + records[end].data.len();
            end += 1;
        }
        let data = if end - start == 1 {
            records[start].data.clone()
        } else {
            let mut data = BytesMut::with_capacity(bytes);
            for (i, r) in records[start..end].iter().enumerate() {
                if i > 0 {
                    data.put_u8(schemas::EVENT_SEPARATOR);
                }
                data.put_slice(&r.data);
            }
            data.freeze()
        };
        packs.push((start..end, StreamRecord { partition_key: records[start].partition_key.clone(), data }));
        start = end;
    }
    packs
}

/// What happened to one record in one `PutRecords` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordResult {
    Ok,
    /// Kinesis' per-record `ErrorCode`.
    Failed(String),
}

/// A failure of a whole `PutRecords` call (network, timeout, throttling of the call).
#[derive(Debug, Clone)]
pub struct CallError {
    /// The service error code when there is one (`ProvisionedThroughputExceededException`…).
    pub code: Option<String>,
    pub message: String,
}

/// The one I/O seam of the producer: put one chunk of records, report per-record results.
pub trait RecordSink: Send + Sync + 'static {
    fn put_records(
        &self,
        records: &[StreamRecord],
    ) -> impl std::future::Future<Output = Result<Vec<RecordResult>, CallError>> + Send;
}

/// The final fate of one record after retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Acked,
    /// Not acknowledged within the budget; `throttled` tells 429 from 503.
    Failed {
        throttled: bool,
    },
}

/// Splits `records` (by index) into chunks within the `PutRecords` count and byte limits.
pub fn chunk_indices(records: &[StreamRecord], pending: &[usize]) -> Vec<Vec<usize>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for &i in pending {
        let size = records[i].data.len() + records[i].partition_key.len();
        if !current.is_empty() && (current.len() == PUT_RECORDS_MAX || bytes + size > PUT_RECORDS_MAX_BYTES) {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(i);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Packs the events into stream records and puts them, resending only the records that failed,
/// until all are acknowledged, a permanent error occurs, or `budget` runs out. Returns one
/// [`Delivery`] per input event: the fate of the record that carried it.
pub async fn publish_with_retry<S: RecordSink>(
    sink: &S,
    records: &[PreparedRecord],
    budget: Duration,
) -> Vec<Delivery> {
    let packs = pack_records(records);
    let (ranges, stream): (Vec<_>, Vec<_>) = packs.into_iter().unzip();
    metrics::counter!("producer_stream_records_total").increment(stream.len() as u64);
    let fates = put_with_retry(sink, &stream, budget).await;
    let mut out = Vec::with_capacity(records.len());
    for (range, fate) in ranges.into_iter().zip(fates) {
        out.extend(std::iter::repeat_n(fate, range.len()));
    }
    out
}

/// Puts every record, resending only the ones that failed, until all are acknowledged, a
/// permanent error occurs, or `budget` runs out. Returns one [`Delivery`] per record.
async fn put_with_retry<S: RecordSink>(sink: &S, records: &[StreamRecord], budget: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + budget;
    let mut outcome: Vec<Option<Delivery>> = vec![None; records.len()];
    let mut last_throttled = vec![false; records.len()];
    let mut pending: Vec<usize> = (0..records.len()).collect();
    let mut attempt = 0u32;
    while !pending.is_empty() {
        let mut retry = Vec::new();
        for chunk in chunk_indices(records, &pending) {
            let batch: Vec<StreamRecord> = chunk.iter().map(|&i| records[i].clone()).collect();
            metrics::counter!("producer_put_records_calls_total").increment(1);
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = match tokio::time::timeout(remaining, sink.put_records(&batch)).await {
                Ok(r) => r,
                Err(_) => Err(CallError { code: None, message: "PutRecords timed out within the budget".into() }),
            };
            match result {
                Ok(results) if results.len() == chunk.len() => {
                    for (&i, r) in chunk.iter().zip(results) {
                        match r {
                            RecordResult::Ok => outcome[i] = Some(Delivery::Acked),
                            RecordResult::Failed(code) => match classify_aws_code(Some(&code)) {
                                ErrorClass::Permanent => outcome[i] = Some(Delivery::Failed { throttled: false }),
                                kind => {
                                    last_throttled[i] = kind == ErrorClass::Throttled;
                                    retry.push(i);
                                }
                            },
                        }
                    }
                }
                Ok(_) => {
                    tracing::warn!(
                        "PutRecords returned a result count that does not match the request; retrying the chunk"
                    );
                    retry.extend(chunk);
                }
                Err(e) => {
                    let kind = classify_aws_code(e.code.as_deref());
                    tracing::warn!(code = ?e.code, message = %e.message, "PutRecords call failed");
                    for &i in &chunk {
                        if kind == ErrorClass::Permanent {
                            outcome[i] = Some(Delivery::Failed { throttled: false });
                        } else {
                            last_throttled[i] = kind == ErrorClass::Throttled;
                            retry.push(i);
                        }
                    }
                }
            }
        }
        if retry.is_empty() {
            break;
        }
        let Some(wait) = PUBLISH_RETRY.backoff_within(attempt, deadline) else {
            metrics::counter!("producer_put_records_failed_records_total").increment(retry.len() as u64);
            for &i in &retry {
                outcome[i] = Some(Delivery::Failed { throttled: last_throttled[i] });
            }
            break;
        };
        metrics::counter!("producer_put_records_retried_records_total").increment(retry.len() as u64);
        tokio::time::sleep(wait).await;
        attempt += 1;
        pending = retry;
    }
    outcome.into_iter().map(|o| o.unwrap_or(Delivery::Failed { throttled: false })).collect()
}

/// Coalesces concurrent requests' records into shared `PutRecords` calls (local server and
/// container mode): a batch leaves after `linger` or at [`PUT_RECORDS_MAX`] records, whichever
/// comes first, and each request is answered once its own records are settled.
#[derive(Clone)]
pub struct Coalescer {
    tx: mpsc::Sender<Job>,
}

struct Job {
    records: Vec<PreparedRecord>,
    reply: oneshot::Sender<Vec<Delivery>>,
}

/// Most flushes in flight at once; more requests wait in the queue (back-pressure).
const MAX_CONCURRENT_FLUSHES: usize = 16;

impl Coalescer {
    pub fn spawn<S: RecordSink>(sink: Arc<S>, linger: Duration, budget: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(4096);
        tokio::spawn(run_coalescer(rx, sink, linger, budget));
        Coalescer { tx }
    }

    pub async fn publish(&self, records: Vec<PreparedRecord>) -> Vec<Delivery> {
        let n = records.len();
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Job { records, reply }).await.is_err() {
            return vec![Delivery::Failed { throttled: false }; n];
        }
        rx.await.unwrap_or_else(|_| vec![Delivery::Failed { throttled: false }; n])
    }
}

async fn run_coalescer<S: RecordSink>(mut rx: mpsc::Receiver<Job>, sink: Arc<S>, linger: Duration, budget: Duration) {
    let flushes = Arc::new(Semaphore::new(MAX_CONCURRENT_FLUSHES));
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut count = jobs[0].records.len();
        let until = Instant::now() + linger;
        while count < PUT_RECORDS_MAX {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(job)) => {
                    count += job.records.len();
                    jobs.push(job);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let Ok(permit) = flushes.clone().acquire_owned().await else { return };
        let sink = sink.clone();
        tokio::spawn(async move {
            let all: Vec<PreparedRecord> = jobs.iter().flat_map(|j| j.records.iter().cloned()).collect();
            let mut deliveries = publish_with_retry(sink.as_ref(), &all, budget).await.into_iter();
            for job in jobs {
                let mine: Vec<Delivery> = deliveries.by_ref().take(job.records.len()).collect();
                let _ = job.reply.send(mine);
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Mutex;
    use uuid::Uuid;

    fn events_of(n: usize, bytes: usize) -> Vec<PreparedRecord> {
        (0..n)
            .map(|index| {
                let event_id = Uuid::new_v4();
                PreparedRecord {
                    index,
                    event_id,
                    partition_key: event_id.to_string(),
                    data: Bytes::from(vec![b'x'; bytes]),
                }
            })
            .collect()
    }

    /// Events too big to share a record: each travels alone, so record = event in these tests.
    fn records(n: usize) -> Vec<PreparedRecord> {
        events_of(n, PACK_MAX_BYTES / 2 + 1)
    }

    /// Fails the records whose partition keys are listed, `times` times each, then succeeds.
    struct Flaky {
        failing: Mutex<std::collections::HashMap<String, u32>>,
        code: &'static str,
        calls: Mutex<Vec<Vec<String>>>,
    }

    impl Flaky {
        fn new(keys: &[&PreparedRecord], times: u32, code: &'static str) -> Self {
            Flaky {
                failing: Mutex::new(keys.iter().map(|r| (r.partition_key.clone(), times)).collect()),
                code,
                calls: Mutex::new(Vec::new()),
            }
        }
    }

    impl RecordSink for Flaky {
        async fn put_records(&self, records: &[StreamRecord]) -> Result<Vec<RecordResult>, CallError> {
            self.calls.lock().unwrap().push(records.iter().map(|r| r.partition_key.clone()).collect());
            let mut failing = self.failing.lock().unwrap();
            Ok(records
                .iter()
                .map(|r| match failing.get_mut(&r.partition_key) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        RecordResult::Failed(self.code.into())
                    }
                    _ => RecordResult::Ok,
                })
                .collect())
        }
    }

    /// Invariant: only the records that failed are resent, and all end acknowledged.
    #[tokio::test(start_paused = true)]
    async fn only_failed_records_are_resent() {
        let recs = records(10);
        let sink = Flaky::new(&[&recs[2], &recs[7]], 2, "ProvisionedThroughputExceededException");
        let out = publish_with_retry(&sink, &recs, Duration::from_secs(5)).await;
        assert!(out.iter().all(|d| *d == Delivery::Acked));
        let calls = sink.calls.lock().unwrap();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0].len(), 10);
        assert_eq!(calls[1], vec![recs[2].partition_key.clone(), recs[7].partition_key.clone()]);
        assert_eq!(calls[2].len(), 2);
    }

    /// Invariant: the budget bounds the time spent, and what is left is reported as throttled.
    #[tokio::test(start_paused = true)]
    async fn budget_is_respected_and_failures_listed() {
        let recs = records(5);
        let sink = Flaky::new(&[&recs[1], &recs[4]], u32::MAX, "ProvisionedThroughputExceededException");
        let start = Instant::now();
        let out = publish_with_retry(&sink, &recs, Duration::from_millis(800)).await;
        assert!(start.elapsed() <= Duration::from_millis(800), "{:?}", start.elapsed());
        let failed: Vec<usize> =
            out.iter().enumerate().filter(|(_, d)| **d != Delivery::Acked).map(|(i, _)| i).collect();
        assert_eq!(failed, vec![1, 4]);
        assert_eq!(out[1], Delivery::Failed { throttled: true });
        assert!(sink.calls.lock().unwrap().len() > 2, "it retried within the budget");
    }

    /// Invariant: permanent errors are not retried.
    #[tokio::test(start_paused = true)]
    async fn permanent_errors_fail_fast() {
        let recs = records(3);
        let sink = Flaky::new(&[&recs[0]], u32::MAX, "KMSAccessDeniedException");
        let out = publish_with_retry(&sink, &recs, Duration::from_secs(5)).await;
        assert_eq!(out[0], Delivery::Failed { throttled: false });
        assert_eq!(sink.calls.lock().unwrap().len(), 1);
    }

    #[test]
    fn chunks_respect_count_and_bytes() {
        let stream = |n: usize, bytes: usize| -> Vec<StreamRecord> {
            (0..n)
                .map(|i| StreamRecord { partition_key: i.to_string(), data: Bytes::from(vec![b'x'; bytes]) })
                .collect()
        };
        let recs = stream(1201, 100);
        let all: Vec<usize> = (0..recs.len()).collect();
        let sizes: Vec<usize> = chunk_indices(&recs, &all).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![500, 500, 201]);
        let big = stream(6, 1024 * 1024);
        let all: Vec<usize> = (0..6).collect();
        let sizes: Vec<usize> = chunk_indices(&big, &all).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4, 2]);
    }

    /// Invariant: concurrent requests share PutRecords calls and each gets its own results.
    #[tokio::test(start_paused = true)]
    async fn coalescer_shares_calls_and_splits_results() {
        let recs = records(30);
        let sink = Arc::new(Flaky::new(&[&recs[25]], u32::MAX, "KMSAccessDeniedException"));
        let co = Coalescer::spawn(sink.clone(), Duration::from_millis(5), Duration::from_secs(2));
        let handles: Vec<_> = recs
            .chunks(10)
            .map(|c| {
                let co = co.clone();
                let c = c.to_vec();
                tokio::spawn(async move { co.publish(c).await })
            })
            .collect();
        let mut results = Vec::new();
        for h in handles {
            results.push(h.await.unwrap());
        }
        assert_eq!(sink.calls.lock().unwrap().len(), 1, "one shared call");
        assert!(results[0].iter().all(|d| *d == Delivery::Acked));
        assert_eq!(results[2][5], Delivery::Failed { throttled: false });
        assert_eq!(results[2].iter().filter(|d| **d == Delivery::Acked).count(), 9);
    }

    /// Invariant: packing keeps every event once, in order, each record within the size limit,
    /// and the consumer's split (`\n`) gives back each event's bytes.
    #[test]
    fn packs_cover_every_event_within_the_limit() {
        let mut events = events_of(200, 1000);
        // One event too big to share a record, in the middle.
        events[70].data = Bytes::from(vec![b'y'; PACK_MAX_BYTES - 10]);
        let packs = pack_records(&events);
        let mut next = 0;
        for (range, record) in &packs {
            assert_eq!(range.start, next, "contiguous");
            next = range.end;
            assert!(record.data.len() <= PACK_MAX_BYTES);
            assert_eq!(record.partition_key, events[range.start].partition_key);
            let lines: Vec<&[u8]> = schemas::record_events(&record.data).collect();
            let expected: Vec<&[u8]> = events[range.clone()].iter().map(|e| &e.data[..]).collect();
            assert_eq!(lines, expected);
        }
        assert_eq!(next, events.len());
        // 1000-byte events: 65 per record (65 x 1000 + 64 separators <= 64 KiB).
        assert_eq!(packs[0].0, 0..65);
        assert!(packs.iter().any(|(r, _)| *r == (70..71)), "the big event travels alone");
        assert!(pack_records(&[]).is_empty());
    }

    /// Invariant: a record that fails fails exactly the events it carries; the others are acked.
    #[tokio::test(start_paused = true)]
    async fn a_failed_record_fails_its_events_only() {
        let events = events_of(100, 1000);
        let packs = pack_records(&events);
        assert_eq!(packs.len(), 2);
        let sink = Flaky::new(&[&events[packs[1].0.start]], u32::MAX, "KMSAccessDeniedException");
        let out = publish_with_retry(&sink, &events, Duration::from_secs(5)).await;
        assert_eq!(out.len(), 100);
        for (i, d) in out.iter().enumerate() {
            let expected =
                if packs[1].0.contains(&i) { Delivery::Failed { throttled: false } } else { Delivery::Acked };
            assert_eq!(*d, expected, "event {i}");
        }
        assert_eq!(sink.calls.lock().unwrap()[0].len(), 2, "100 events went as 2 records");
    }
}
