//! Replay of what the consumer gave up on — the failed-batch descriptors of the on-failure
//! destination and the lake's dead-letter objects — through the same pipeline, exactly once.
//!
//! When a batch exhausts the event source mapping's retries (a store down for longer than they
//! last), Lambda sends the on-failure queue a *descriptor* — shard and sequence range — and
//! moves on; the records stay in Kinesis until the stream's retention passes. Replaying reads
//! the range again and runs it through [`Pipeline::process`]: the ledger knows which events were
//! claimed by an earlier attempt (`Own`) and which are new, so a replay adds each event once
//! however often it runs, and the descriptor is deleted only after its batch succeeded. The
//! local runner sends the same descriptors when given a queue (`RUNNER_ON_FAILURE_QUEUE_URL`).
//!
//! The parsing and the sequence arithmetic here are pure; [`Replayer`] does the I/O.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use aws_sdk_kinesis::types::ShardIteratorType;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_kit::s3::Bucket;

use crate::decode::InputRecord;
use crate::error::ConsumerError;
use crate::handler::{BatchReport, Pipeline, record_outcome};
use crate::ledger::Ledger;
use crate::runner::kinesis_err;
use crate::sinks::dynamo::ItemStore;
use crate::sinks::s3::ObjectStore;
use crate::sinks::sqs::{FailureQueue, QueueMessage};

/// Most records one `GetRecords` call returns when re-reading a range. Far below Kinesis's
/// 10,000: records pack up to 64 KiB of events, and one answer must stay under Kinesis's 10 MB
/// (kinesalite has no such cap and builds whatever it is asked for).
const REPLAY_GET_RECORDS: i32 = 150;

/// `GetRecords` calls that may come back empty before the range's end is reached; Kinesis can
/// answer empty while the iterator is still short of the records.
const EMPTY_READS_MAX: u32 = 20;

/// The `KinesisBatchInfo` of a Lambda on-failure record: where a failed batch's records are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedBatch {
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approximate_arrival_of_first_record: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approximate_arrival_of_last_record: Option<String>,
    pub batch_size: u64,
    pub stream_arn: String,
}

impl FailedBatch {
    /// The stream's name, from its ARN (`arn:aws:kinesis:<region>:<account>:stream/<name>`).
    pub fn stream_name(&self) -> Result<&str, ConsumerError> {
        self.stream_arn
            .rsplit_once(":stream/")
            .map(|(_, name)| name)
            .filter(|name| !name.is_empty())
            .ok_or_else(|| ConsumerError::Replay(format!("{:?} is not a Kinesis stream ARN", self.stream_arn)))
    }

    /// Whether sequence number `seq` lies within the batch's range.
    pub fn contains(&self, seq: &str) -> bool {
        sequence_cmp(seq, &self.start_sequence_number) != Ordering::Less
            && sequence_cmp(seq, &self.end_sequence_number) != Ordering::Greater
    }
}

/// The whole on-failure record, as Lambda sends it for a stream source (the fields `replay`
/// does not need are kept as they came, for the local runner to write the same shape).
#[derive(Debug, Serialize, Deserialize)]
struct OnFailureRecord {
    #[serde(rename = "requestContext", default)]
    request_context: serde_json::Value,
    #[serde(rename = "responseContext", default)]
    response_context: serde_json::Value,
    #[serde(default)]
    version: String,
    #[serde(default)]
    timestamp: String,
    #[serde(rename = "KinesisBatchInfo")]
    kinesis_batch_info: FailedBatch,
}

/// The failed batch an on-failure record describes.
pub fn parse_on_failure(body: &str) -> Result<FailedBatch, ConsumerError> {
    serde_json::from_str::<OnFailureRecord>(body)
        .map(|r| r.kinesis_batch_info)
        .map_err(|e| ConsumerError::Replay(format!("not an on-failure record of a Kinesis batch: {e}")))
}

/// The on-failure record the local runner sends for a batch it gave up on after `attempts`
/// attempts: the shape Lambda sends (`RetryAttemptsExhausted`), so `replay` reads both alike.
pub fn on_failure_record(batch: &FailedBatch, attempts: u32, error: &str, now: DateTime<Utc>) -> String {
    let record = OnFailureRecord {
        request_context: serde_json::json!({
            "requestId": uuid::Uuid::new_v4().to_string(),
            "functionArn": "local-runner",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": attempts,
        }),
        response_context: serde_json::json!({
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": error,
        }),
        version: "1.0".into(),
        timestamp: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        kinesis_batch_info: batch.clone(),
    };
    serde_json::to_string(&record).unwrap_or_default()
}

/// Orders Kinesis sequence numbers, which are decimal integers of up to 128 bits written as
/// strings of varying length: by value, not by text.
pub fn sequence_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// One row of a dead-letter object (`lake::encode_dead_letter`), as far as a redrive needs it.
#[derive(Debug, Deserialize)]
struct DeadLetterRow {
    reason_code: String,
    shard_id: String,
    sequence_number: String,
    #[serde(default)]
    line: u32,
    approximate_arrival: DateTime<Utc>,
    payload_base64: String,
}

/// One set-aside record's arrival and its (line, bytes) rows.
type SetAside = (DateTime<Utc>, Vec<(u32, Vec<u8>)>);

/// The records a dead-letter object holds, ready for the pipeline again, with the reason codes
/// they were set aside for. Rows of one record (several bad lines of a packed record) are joined
/// back into one record, in line order, so a record is never fed twice in one batch.
pub fn dead_letter_records(body: &[u8]) -> Result<(Vec<InputRecord>, Vec<String>), ConsumerError> {
    let mut by_record: BTreeMap<(String, String), SetAside> = BTreeMap::new();
    let mut reasons = Vec::new();
    for (n, line) in body.split(|b| *b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
        let row: DeadLetterRow = serde_json::from_slice(line)
            .map_err(|e| ConsumerError::Replay(format!("dead-letter row {}: {e}", n + 1)))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(&row.payload_base64)
            .map_err(|e| ConsumerError::Replay(format!("dead-letter row {}: payload_base64: {e}", n + 1)))?;
        reasons.push(row.reason_code);
        by_record
            .entry((row.shard_id, row.sequence_number))
            .or_insert_with(|| (row.approximate_arrival, Vec::new()))
            .1
            .push((row.line, data));
    }
    let mut records: Vec<InputRecord> = by_record
        .into_iter()
        .map(|((shard_id, sequence_number), (approximate_arrival, mut lines))| {
            lines.sort_by_key(|(line, _)| *line);
            let data = lines.into_iter().map(|(_, d)| d).collect::<Vec<_>>().join(&schemas::EVENT_SEPARATOR);
            InputRecord { shard_id, sequence_number, approximate_arrival, data: Bytes::from(data) }
        })
        .collect();
    records
        .sort_by(|a, b| a.shard_id.cmp(&b.shard_id).then_with(|| sequence_cmp(&a.sequence_number, &b.sequence_number)));
    Ok((records, reasons))
}

/// What replaying one failed batch or dead-letter object did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Records read back (from Kinesis, or from the dead-letter object).
    pub records: usize,
    /// Events counted now for the first time; the rest had been claimed by an earlier attempt.
    pub new_events: usize,
    /// Events whose stores were (re)written by this replay.
    pub owned_events: usize,
    /// Lines set aside again (still undecodable): in a new dead-letter object.
    pub quarantined: usize,
    /// The dead-letter objects this replay wrote.
    pub dead_letter_objects: Vec<String>,
}

impl Replayed {
    fn add(&mut self, report: &BatchReport) {
        self.records += report.records;
        self.new_events += report.new_events;
        self.owned_events += report.owned_events;
        self.quarantined += report.quarantined;
        self.dead_letter_objects.extend(report.dead_letter_object.clone());
    }
}

/// What became of one on-failure message.
#[derive(Debug)]
pub enum MessageOutcome {
    /// Dry run: the batch, and how many of its records the stream still holds.
    WouldReplay { batch: FailedBatch, records: usize },
    /// Replayed, and the message deleted.
    Replayed { batch: FailedBatch, replayed: Replayed },
    /// Left on the queue (visible again at once), and why.
    Failed { message_id: String, batch: Option<FailedBatch>, error: ConsumerError },
}

/// What became of one dead-letter object.
#[derive(Debug)]
pub enum ObjectOutcome {
    /// Dry run: the object's records and the reasons its rows were set aside for.
    WouldRedrive { key: String, records: usize, reasons: BTreeMap<String, usize> },
    /// Redriven, and the object deleted (its still-bad lines are in `replayed.dead_letter_objects`).
    Redriven { key: String, replayed: Replayed },
    /// Left in place, and why.
    Failed { key: String, error: ConsumerError },
}

impl MessageOutcome {
    pub fn failed(&self) -> bool {
        matches!(self, MessageOutcome::Failed { .. })
    }
}

impl ObjectOutcome {
    pub fn failed(&self) -> bool {
        matches!(self, ObjectOutcome::Failed { .. })
    }
}

/// How long a message being replayed stays hidden from other readers, in seconds: longer than
/// re-reading and processing one batch takes, so two replays never work on one message.
const REPLAY_HIDE_SECONDS: i32 = 900;

/// Replays through a pipeline: re-reads failed batches from Kinesis, reads dead-letter objects
/// from the lake bucket, and processes them in batches of at most `batch_size` records.
pub struct Replayer<'p, O: ObjectStore, D: ItemStore, L: Ledger> {
    pub pipeline: &'p Pipeline<O, D, L>,
    pub kinesis: aws_sdk_kinesis::Client,
    /// The lake bucket (where the dead-letter objects are).
    pub lake: Bucket,
    /// Most records per `Pipeline::process` call.
    pub batch_size: usize,
}

impl<O: ObjectStore, D: ItemStore, L: Ledger> Replayer<'_, O, D, L> {
    /// The records of a failed batch, read back from its shard. Fails with
    /// [`ConsumerError::Expired`] when the range's first record is no longer in the stream.
    pub async fn read(&self, batch: &FailedBatch) -> Result<Vec<InputRecord>, ConsumerError> {
        let stream = batch.stream_name()?;
        let shard = batch.shard_id.as_str();
        let out = self
            .kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(&batch.start_sequence_number)
            .send()
            .await
            .map_err(|e| kinesis_err("GetShardIterator", shard, e))?;
        let mut iterator = out.shard_iterator().map(str::to_owned);
        let mut records = Vec::new();
        let mut empty_reads = 0;
        while let Some(it) = iterator.take() {
            let out = self
                .kinesis
                .get_records()
                .shard_iterator(it)
                .limit(REPLAY_GET_RECORDS)
                .send()
                .await
                .map_err(|e| kinesis_err("GetRecords", shard, e))?;
            let mut past_end = false;
            for r in out.records() {
                if !batch.contains(r.sequence_number()) {
                    past_end = sequence_cmp(r.sequence_number(), &batch.end_sequence_number) == Ordering::Greater;
                    if past_end {
                        break;
                    }
                    continue;
                }
                let arrival = r
                    .approximate_arrival_timestamp()
                    .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                    .unwrap_or_default();
                records.push(InputRecord {
                    shard_id: shard.to_owned(),
                    sequence_number: r.sequence_number().to_owned(),
                    approximate_arrival: arrival,
                    data: Bytes::copy_from_slice(r.data().as_ref()),
                });
            }
            let at_end = records.last().is_some_and(|r| r.sequence_number == batch.end_sequence_number);
            if past_end || at_end {
                break;
            }
            if out.records().is_empty() {
                empty_reads += 1;
                if empty_reads > EMPTY_READS_MAX || (out.millis_behind_latest() == Some(0) && !records.is_empty()) {
                    break;
                }
            }
            iterator = out.next_shard_iterator().map(str::to_owned);
        }
        // A trimmed range starts later than asked, or not at all: those records are gone.
        if records.first().is_none_or(|r| r.sequence_number != batch.start_sequence_number) {
            return Err(ConsumerError::Expired {
                shard: batch.shard_id.clone(),
                start: batch.start_sequence_number.clone(),
                end: batch.end_sequence_number.clone(),
            });
        }
        Ok(records)
    }

    /// Runs records through the pipeline, `batch_size` at a time and one shard per call (a
    /// batch's lake and dead-letter keys name its shard). Each call is a batch as the event
    /// source mapping would deliver it, so the ledger keeps the replay exact.
    pub async fn process(&self, records: &[InputRecord]) -> Result<Replayed, ConsumerError> {
        let mut replayed = Replayed::default();
        for shard in records.chunk_by(|a, b| a.shard_id == b.shard_id) {
            for chunk in shard.chunks(self.batch_size.max(1)) {
                let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else { continue };
                let result = self.pipeline.process(chunk).await;
                record_outcome(&first.shard_id, &first.sequence_number, &last.sequence_number, &result);
                replayed.add(&result?);
            }
        }
        Ok(replayed)
    }

    /// Replays one failed batch: reads its records back and processes them.
    pub async fn replay_batch(&self, batch: &FailedBatch) -> Result<Replayed, ConsumerError> {
        let records = self.read(batch).await?;
        self.process(&records).await
    }

    /// Works through the on-failure queue, at most `max_messages` messages. A dry run
    /// (`execute` false) reads each batch back from the stream to say whether it can still be
    /// replayed, and leaves every message in place; otherwise each batch is replayed and its
    /// message deleted once the batch succeeded. A message that fails is left for the next run.
    pub async fn replay_queue(
        &self,
        queue: &FailureQueue,
        execute: bool,
        max_messages: usize,
    ) -> Result<Vec<MessageOutcome>, ConsumerError> {
        let mut outcomes = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while outcomes.len() < max_messages {
            let messages = queue.receive(REPLAY_HIDE_SECONDS).await?;
            let (fresh, again): (Vec<QueueMessage>, Vec<QueueMessage>) =
                messages.into_iter().partition(|m| seen.insert(m.id.clone()));
            // A message handled earlier in this run (left in place: a dry run, a failure) came
            // round again: it stays visible for the next run, not hidden for this one's timeout.
            for m in &again {
                queue.release(m).await?;
            }
            if fresh.is_empty() {
                break;
            }
            for message in fresh {
                if outcomes.len() >= max_messages {
                    queue.release(&message).await?;
                    continue;
                }
                let outcome = self.replay_message(&message, execute).await;
                match &outcome {
                    MessageOutcome::Replayed { .. } => queue.delete(&message).await?,
                    _ => queue.release(&message).await?,
                }
                outcomes.push(outcome);
            }
        }
        Ok(outcomes)
    }

    async fn replay_message(&self, message: &QueueMessage, execute: bool) -> MessageOutcome {
        let failed =
            |batch: Option<FailedBatch>, error| MessageOutcome::Failed { message_id: message.id.clone(), batch, error };
        let batch = match parse_on_failure(&message.body) {
            Ok(b) => b,
            Err(e) => return failed(None, e),
        };
        if !execute {
            return match self.read(&batch).await {
                Ok(records) => MessageOutcome::WouldReplay { batch, records: records.len() },
                Err(e) => failed(Some(batch), e),
            };
        }
        match self.replay_batch(&batch).await {
            Ok(replayed) => MessageOutcome::Replayed { batch, replayed },
            Err(e) => failed(Some(batch), e),
        }
    }

    /// Works through the dead-letter objects under `prefix`: a dry run reads each and counts
    /// its records and reasons; otherwise each is redriven ([`Replayer::redrive`]). The objects
    /// are listed once, before any is redriven, so a redrive's own new object is not taken up.
    pub async fn redrive_dead_letters(&self, prefix: &str, execute: bool) -> Result<Vec<ObjectOutcome>, ConsumerError> {
        let mut outcomes = Vec::new();
        for (key, _) in self.dead_letter_objects(prefix).await? {
            let outcome = if execute {
                match self.redrive(&key).await {
                    Ok(replayed) => ObjectOutcome::Redriven { key, replayed },
                    Err(error) => ObjectOutcome::Failed { key, error },
                }
            } else {
                match self.read_dead_letter(&key).await {
                    Ok((records, reasons)) => {
                        let mut counted = BTreeMap::new();
                        for r in reasons {
                            *counted.entry(r).or_insert(0) += 1;
                        }
                        ObjectOutcome::WouldRedrive { key, records: records.len(), reasons: counted }
                    }
                    Err(error) => ObjectOutcome::Failed { key, error },
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// The dead-letter objects under `prefix`, as (key, size in bytes), oldest key first.
    pub async fn dead_letter_objects(&self, prefix: &str) -> Result<Vec<(String, u64)>, ConsumerError> {
        let mut keys = self.lake.list(prefix).await?;
        keys.sort();
        Ok(keys)
    }

    /// The records of one dead-letter object and the reasons they were set aside for.
    pub async fn read_dead_letter(&self, key: &str) -> Result<(Vec<InputRecord>, Vec<String>), ConsumerError> {
        dead_letter_records(&self.lake.get(key).await?)
    }

    /// Redrives one dead-letter object: processes its records, then deletes it — unless the
    /// redrive wrote its still-bad lines to the very same key (same hour, same range), which
    /// then holds what is left and stays.
    pub async fn redrive(&self, key: &str) -> Result<Replayed, ConsumerError> {
        let (records, _) = self.read_dead_letter(key).await?;
        let replayed = self.process(&records).await?;
        if !replayed.dead_letter_objects.iter().any(|k| k == key) {
            self.lake.delete(&[key.to_owned()]).await?;
        }
        Ok(replayed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::quarantine;
    use crate::lake::encode_dead_letter;

    /// The on-failure record Lambda sends for a Kinesis batch, as AWS documents it.
    const LAMBDA_ON_FAILURE: &str = r#"{
        "requestContext": {
            "requestId": "c9b8fa9f-5a7f-xmpl-af9c-0c604cde93a5",
            "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 1
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2019-11-14T00:38:06.021Z",
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000001",
            "startSequenceNumber": "49601189658422359378836298521827638475320189012309704722",
            "endSequenceNumber": "49601189658422359378836298522902373528957594348623495186",
            "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
            "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z",
            "batchSize": 500,
            "streamArn": "arn:aws:kinesis:us-east-2:123456789012:stream/mystream"
        }
    }"#;

    #[test]
    fn reads_the_batch_lambda_describes() {
        let batch = parse_on_failure(LAMBDA_ON_FAILURE).unwrap();
        assert_eq!(batch.shard_id, "shardId-000000000001");
        assert_eq!(batch.batch_size, 500);
        assert_eq!(batch.stream_name().unwrap(), "mystream");
        assert!(batch.contains(&batch.start_sequence_number));
        assert!(batch.contains(&batch.end_sequence_number));
        assert!(batch.contains("49601189658422359378836298522000000000000000000000000000"));
        assert!(!batch.contains("49601189658422359378836298521827638475320189012309704721"));
        assert!(!batch.contains("49601189658422359378836298522902373528957594348623495187"));
    }

    /// Invariant: what the local runner sends reads back as the same batch, in Lambda's shape.
    #[test]
    fn the_runner_writes_what_lambda_writes() {
        let batch = parse_on_failure(LAMBDA_ON_FAILURE).unwrap();
        let body = on_failure_record(&batch, 6, "PostgreSQL claim events failed", Utc::now());
        assert_eq!(parse_on_failure(&body).unwrap(), batch);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["requestContext"]["condition"], "RetryAttemptsExhausted");
        assert_eq!(v["requestContext"]["approximateInvokeCount"], 6);
        assert_eq!(v["KinesisBatchInfo"]["startSequenceNumber"], batch.start_sequence_number);
    }

    #[test]
    fn refuses_what_is_not_a_kinesis_descriptor() {
        assert!(parse_on_failure(r#"{"requestContext": {}}"#).is_err());
        assert!(parse_on_failure("not json").is_err());
        let mut batch = parse_on_failure(LAMBDA_ON_FAILURE).unwrap();
        batch.stream_arn = "arn:aws:sqs:us-east-2:123456789012:queue".into();
        assert!(batch.stream_name().is_err());
    }

    /// Sequence numbers compare as numbers: a shorter one is smaller whatever its digits.
    #[test]
    fn sequence_numbers_order_by_value() {
        assert_eq!(sequence_cmp("9", "10"), Ordering::Less);
        assert_eq!(sequence_cmp("10", "9"), Ordering::Greater);
        assert_eq!(sequence_cmp("0042", "42"), Ordering::Equal);
        assert_eq!(sequence_cmp("123", "124"), Ordering::Less);
    }

    fn record(seq: &str, data: &[u8]) -> InputRecord {
        InputRecord {
            shard_id: "shardId-000000000000".into(),
            sequence_number: seq.into(),
            approximate_arrival: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            data: Bytes::copy_from_slice(data),
        }
    }

    /// Invariant: a dead-letter object reads back as the records it set aside, bytes intact,
    /// the bad lines of one packed record joined into one record in line order.
    #[test]
    fn dead_letter_objects_read_back_as_records() {
        let whole = record("100", b"{\"a\":1}\n{\"a\":2}");
        let mut line7 = quarantine(&record("99", b"seven"), "invalid_json", "bad".into());
        line7.line = 7;
        let mut line3 = quarantine(&record("99", b"three"), "invalid_json", "bad".into());
        line3.line = 3;
        let rows = vec![quarantine(&whole, "batch_failed", "PostgreSQL was down".into()), line7, line3];
        let (records, reasons) = dead_letter_records(&encode_dead_letter(&rows)).unwrap();
        assert_eq!(reasons, ["batch_failed", "invalid_json", "invalid_json"]);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].sequence_number, "99");
        assert_eq!(records[0].data.as_ref(), b"three\nseven");
        assert_eq!(records[1].sequence_number, "100");
        assert_eq!(records[1].data, whole.data);
        assert_eq!(records[1].approximate_arrival, whole.approximate_arrival);
        assert!(dead_letter_records(b"{\"reason_code\": 1}\n").is_err());
    }
}
