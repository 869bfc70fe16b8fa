//! The lake tools' error type: which store call or file failed, and on what.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ToolError {
    #[error("PostgreSQL {step} failed: {source}")]
    Postgres {
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("lake file {key}: {message}")]
    Parquet { key: String, message: String },
    /// Reported by the shared plumbing: an S3 call, the configuration, the database secret.
    #[error(transparent)]
    Kit(#[from] service_kit::KitError),
}

impl ToolError {
    pub fn postgres(step: &'static str) -> impl FnOnce(sqlx::Error) -> ToolError {
        move |source| ToolError::Postgres { step, source }
    }

    /// A Parquet failure while reading or writing the file `key`.
    pub fn parquet(key: &str) -> impl FnOnce(String) -> ToolError + '_ {
        move |message| ToolError::Parquet { key: key.to_owned(), message }
    }
}
