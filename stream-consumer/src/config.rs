//! The consumer's configuration, read once from the environment at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::ConsumerError;

/// Where PostgreSQL credentials come from. `Debug` redacts the URL, which may hold a password.
#[derive(Clone)]
pub enum DatabaseSource {
    /// `DATABASE_URL`, used as given (its `sslmode`/`sslrootcert` parameters apply).
    Url(String),
    /// `DATABASE_SECRET_ARN` (username/password, RDS-managed) plus `DATABASE_HOST`,
    /// `DATABASE_PORT` and `DATABASE_NAME` (any of which the secret may also carry).
    Secret { arn: String, host: Option<String>, port: Option<u16>, name: Option<String> },
}

impl std::fmt::Debug for DatabaseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseSource::Url(_) => f.write_str("Url(<redacted>)"),
            DatabaseSource::Secret { arn, host, port, name } => f
                .debug_struct("Secret")
                .field("arn", arn)
                .field("host", host)
                .field("port", port)
                .field("name", name)
                .finish(),
        }
    }
}

/// Everything the consumer reads from the environment. Names match the README table and the
/// Terraform Lambda environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `LAKE_BUCKET`: bucket for Parquet files and dead-letter NDJSON.
    pub lake_bucket: String,
    /// `DYNAMODB_TABLE`: table with one item per event.
    pub dynamodb_table: String,
    /// `DATABASE_URL` or `DATABASE_SECRET_ARN` (+ host/port/name).
    pub database: DatabaseSource,
    /// `DATABASE_SSL_ROOT_CERT`: CA bundle path; when set, TLS is required and verified
    /// (verify-full). Without it, TLS is used with the system/webpki roots when offered.
    pub database_ssl_root_cert: Option<String>,
    /// `DEDUP_WINDOW_HOURS`: how long an `event_id` is remembered across batches, in hours (default 24).
    pub dedup_window_hours: u32,
    /// `DYNAMODB_TTL_DAYS`: item lifetime, in days (default 30).
    pub dynamodb_ttl_days: u32,
    /// `DYNAMODB_CONCURRENCY`: BatchWriteItem calls in flight per batch (default 16).
    pub dynamodb_concurrency: usize,
    /// `SINK_BUDGET_MS`: time budget for a batch's sink retries, in milliseconds (default 20000).
    pub sink_budget: Duration,
    /// `STREAM_NAME`: local runner only: the stream to poll.
    pub stream_name: Option<String>,
    /// `RUNNER_BATCH_SIZE`: local runner: most records per batch (default 10000).
    pub runner_batch_size: usize,
    /// `RUNNER_BATCH_WINDOW_MS`: local runner: longest wait to fill a batch, in milliseconds (default 500).
    pub runner_batch_window: Duration,
    /// `RUNNER_MAX_ATTEMPTS`: local runner: attempts before a batch is dead-lettered (default 5).
    pub runner_max_attempts: u32,
    /// `METRICS_ADDR`: local runner Prometheus endpoint (default 127.0.0.1:9102).
    pub metrics_addr: SocketAddr,
}

impl Config {
    pub fn from_env() -> Result<Self, ConsumerError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConsumerError> {
        let required = |name: &str| get(name).ok_or_else(|| ConsumerError::Config(format!("{name} is required")));
        let database = match (get("DATABASE_URL"), get("DATABASE_SECRET_ARN")) {
            (Some(url), _) => DatabaseSource::Url(url),
            (None, Some(arn)) => DatabaseSource::Secret {
                arn,
                host: get("DATABASE_HOST"),
                port: get("DATABASE_PORT").map(|p| parse("DATABASE_PORT", &p)).transpose()?,
                name: get("DATABASE_NAME"),
            },
            (None, None) => {
                return Err(ConsumerError::Config("DATABASE_URL or DATABASE_SECRET_ARN is required".into()));
            }
        };
        let num = |name: &str, default: u64| -> Result<u64, ConsumerError> {
            get(name).map(|v| parse(name, &v)).transpose().map(|v| v.unwrap_or(default))
        };
        Ok(Config {
            lake_bucket: required("LAKE_BUCKET")?,
            dynamodb_table: required("DYNAMODB_TABLE")?,
            database,
            database_ssl_root_cert: get("DATABASE_SSL_ROOT_CERT"),
            dedup_window_hours: num("DEDUP_WINDOW_HOURS", 24)? as u32,
            dynamodb_ttl_days: num("DYNAMODB_TTL_DAYS", 30)? as u32,
            dynamodb_concurrency: num("DYNAMODB_CONCURRENCY", 16)?.max(1) as usize,
            sink_budget: Duration::from_millis(num("SINK_BUDGET_MS", 20_000)?),
            stream_name: get("STREAM_NAME"),
            runner_batch_size: num("RUNNER_BATCH_SIZE", 10_000)?.clamp(1, 10_000) as usize,
            runner_batch_window: Duration::from_millis(num("RUNNER_BATCH_WINDOW_MS", 500)?),
            runner_max_attempts: num("RUNNER_MAX_ATTEMPTS", 5)?.max(1) as u32,
            metrics_addr: get("METRICS_ADDR")
                .map(|v| parse("METRICS_ADDR", &v))
                .transpose()?
                .unwrap_or(([127, 0, 0, 1], 9102).into()),
        })
    }
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConsumerError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConsumerError::Config(format!("{name}={value:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant: printing the config never prints the database password.
    #[test]
    fn debug_redacts_the_database_url() {
        let c = Config::from_lookup(|k| match k {
            "LAKE_BUCKET" | "DYNAMODB_TABLE" => Some("x".into()),
            "DATABASE_URL" => Some("postgres://app:s3cret@db/analytics".into()),
            _ => None,
        })
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
