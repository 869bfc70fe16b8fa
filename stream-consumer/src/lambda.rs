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

/// Handles one event-source-mapping invocation. The batch is all or nothing: on failure the
/// first record is reported (ReportBatchItemFailures), so the mapping retries the whole batch —
/// or, with bisection, parts of it — and the ledger keeps every retry exact.
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
