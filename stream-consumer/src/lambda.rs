//! The Lambda boundary: `KinesisEvent` in, `KinesisEventResponse` (partial batch failures) out.

use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use bytes::Bytes;

use crate::decode::InputRecord;
use crate::handler::{Pipeline, record_outcome};
use crate::ledger::Ledger;
use crate::sinks::dynamo::ItemStore;
use crate::sinks::s3::ObjectStore;

/// The shard of a record: the part of `eventID` (`shardId-…:sequence`) before the colon.
pub fn shard_of(record: &KinesisEventRecord) -> String {
    record
        .event_id
        .as_deref()
        .and_then(|id| id.split_once(':'))
        .map(|(shard, _)| shard.to_owned())
        .unwrap_or_else(|| "unknown-shard".to_owned())
}

pub fn to_input(records: Vec<KinesisEventRecord>) -> Vec<InputRecord> {
    records
        .into_iter()
        .map(|r| {
            let shard_id = shard_of(&r);
            InputRecord {
                shard_id,
                sequence_number: r.kinesis.sequence_number,
                approximate_arrival: r.kinesis.approximate_arrival_timestamp.0,
                data: Bytes::from(r.kinesis.data.0),
            }
        })
        .collect()
}

/// Handles one event-source-mapping invocation (with `ReportBatchItemFailures`).
///
/// On failure the response names the first record not durably processed, as the partial-batch
/// contract asks; the mapping then retries from it (bisecting, if configured). A batch is
/// written as a whole — its sinks run concurrently and no record counts as stored until all of
/// them succeeded — so that record is the batch's first. Reporting a record whose writes did in
/// part land is safe: the ledger made its owner this record, so the retry finds the claim as
/// `Own`, counts nothing again and overwrites the same lake object and items. The failure is
/// counted (`consumer_batches_total{outcome="failed"}`, an EMF metric on Lambda), which the
/// `consumer-batches-failed` alarm watches: the handler does not also return an error, which
/// would make the mapping ignore the partial-batch response and retry the whole batch.
pub async fn handle_kinesis_event<O: ObjectStore, D: ItemStore, L: Ledger>(
    pipeline: &Pipeline<O, D, L>,
    event: KinesisEvent,
) -> KinesisEventResponse {
    let records = to_input(event.records);
    let mut response = KinesisEventResponse::default();
    let (Some(first), Some(last)) = (records.first(), records.last()) else { return response };
    let result = pipeline.process(&records).await;
    record_outcome(&first.shard_id, &first.sequence_number, &last.sequence_number, &result);
    if result.is_err() {
        let mut failure = KinesisBatchItemFailure::default();
        failure.item_identifier = Some(first.sequence_number.clone());
        response.batch_item_failures.push(failure);
    }
    response
}
