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
    /// Reported by the shared plumbing: an S3 call, the configuration, the database secret.
    #[error(transparent)]
    Kit(#[from] service_kit::KitError),
}

impl ConsumerError {
    pub fn postgres(step: &'static str) -> impl FnOnce(sqlx::Error) -> ConsumerError {
        move |source| ConsumerError::Postgres { step, source }
    }
}
