//! The crate's error type: which setting, secret, AWS call, migration or exporter failed, and why.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum KitError {
    #[error("environment variable {name} is required")]
    MissingEnv { name: String },
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    InvalidEnv { name: String, value: String, reason: String },
    #[error("reading the database secret {arn} failed: {message}")]
    Secret { arn: String, message: String },
    #[error("S3 {op} of {key} failed: {message}")]
    S3 { op: &'static str, key: String, message: String },
    #[error("DynamoDB {op} on {table} failed: {message}")]
    DynamoDb { op: &'static str, table: String, message: String },
    #[error("applying the database migrations failed: {0}")]
    Migrate(String),
    #[error("starting the metrics exporter failed: {0}")]
    Metrics(String),
}

impl KitError {
    /// Whether the same call may succeed later (a store that was unreachable), rather than fail
    /// the same way every time (a setting that is missing or malformed). Every S3 error counts:
    /// whole-object puts, gets and heads cannot fail for good because of what they carry.
    pub fn is_transient(&self) -> bool {
        matches!(self, KitError::Secret { .. } | KitError::S3 { .. } | KitError::DynamoDb { .. })
    }
}
