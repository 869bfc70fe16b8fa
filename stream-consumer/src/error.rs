//! The consumer's error type: which step of which sink failed, and on what.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConsumerError {
    #[error("encoding Parquet failed: {0}")]
    Encode(String),
    #[error("DynamoDB BatchWriteItem failed: {0}")]
    Dynamo(String),
    #[error("DynamoDB left {remaining} items unprocessed when the {budget_ms} ms budget ran out")]
    DynamoBudget { remaining: usize, budget_ms: u128 },
    #[error("PostgreSQL {step} failed: {source}")]
    Postgres {
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("Kinesis {op} on {shard} failed: {message}")]
    Kinesis { op: &'static str, shard: String, message: String },
    /// A replay input (`replay`): an on-failure record or dead-letter row it cannot read.
    #[error("replay: {0}")]
    Replay(String),
    /// A failed batch whose records the stream no longer holds (its retention passed).
    #[error(
        "records {start}..{end} of {shard} are no longer in the stream (retention passed): they cannot be replayed"
    )]
    Expired { shard: String, start: String, end: String },
    /// An on-failure queue call (`SendMessage`, `ReceiveMessage`, `DeleteMessage`).
    #[error("SQS {op} on {queue} failed: {message}")]
    Sqs { op: &'static str, queue: String, message: String },
    /// Reported by the shared plumbing: an S3 call, the configuration, the database secret.
    #[error(transparent)]
    Kit(#[from] service_kit::KitError),
}

impl ConsumerError {
    pub fn postgres(step: &'static str) -> impl FnOnce(sqlx::Error) -> ConsumerError {
        move |source| ConsumerError::Postgres { step, source }
    }
}
