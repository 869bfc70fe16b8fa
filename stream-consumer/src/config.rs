//! The consumer's configuration, read once from the environment at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::KitError;
use service_kit::env::{Env, FromEnv};
use service_kit::postgres::DatabaseConfig;

use crate::site_ttl::SiteTtl;

/// Everything the consumer reads from the environment. Names match the README table and the
/// Terraform Lambda environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `LAKE_BUCKET`: bucket for Parquet files and dead-letter NDJSON.
    pub lake_bucket: String,
    /// `DYNAMODB_TABLE`: table with one item per event.
    pub dynamodb_table: String,
    /// `DATABASE_URL` or `DATABASE_SECRET_ARN` (+ host/port/name), and
    /// `DATABASE_SSL_ROOT_CERT` (see `service_kit::postgres::DatabaseConfig`).
    pub database: DatabaseConfig,
    /// `DATABASE_MIGRATOR_URL` or `DATABASE_MIGRATOR_SECRET_ARN`: the role that owns the schema
    /// and applies migrations (at start-up); when unset, the application's credentials do.
    pub migrator: Option<DatabaseConfig>,
    /// `DEDUP_WINDOW_HOURS`: how long an `event_id` is remembered across batches, in hours (default 24).
    pub dedup_window_hours: u32,
    /// `DYNAMODB_TTL_DAYS`: item lifetime, in days (default 30), unless the item's site sets its
    /// own `dynamodb_ttl_days` in the sites file (`SITES_JSON` text, else the file at
    /// `SITES_CONFIG`; neither set: every site uses the default).
    pub dynamodb_ttl: SiteTtl,
    /// `DYNAMODB_CONCURRENCY`: BatchWriteItem calls in flight per batch (default 16).
    pub dynamodb_concurrency: usize,
    /// `SINK_BUDGET_MS`: time budget for a batch's sink retries, in milliseconds (default 20000).
    pub sink_budget: Duration,
    /// `STREAM_NAME`: local runner only: the stream to poll.
    pub stream_name: Option<String>,
    /// `RUNNER_BATCH_SIZE`: local runner: most records per batch (default 10000).
    pub runner_batch_size: usize,
    /// `RUNNER_BATCH_MAX_BYTES`: local runner: a batch closes once its records hold this many
    /// bytes, in bytes (default 4 MiB: about what one Lambda invocation carries, 6 MB of JSON
    /// with the data in base64).
    pub runner_batch_max_bytes: usize,
    /// `RUNNER_BATCH_WINDOW_MS`: local runner: longest wait to fill a batch, in milliseconds (default 500).
    pub runner_batch_window: Duration,
    /// `RUNNER_MAX_ATTEMPTS`: local runner: attempts before a batch is dead-lettered (default 5).
    pub runner_max_attempts: u32,
    /// `RUNNER_ON_FAILURE_QUEUE_URL`: local runner: the SQS queue that receives a descriptor of
    /// each batch that failed `RUNNER_MAX_RETRY_ATTEMPTS` retries, as the event source mapping's
    /// on-failure destination does on AWS (`replay` reads it). Unset (the default): a batch held
    /// up by an outage is retried until the store is back.
    pub runner_on_failure_queue_url: Option<String>,
    /// `RUNNER_MAX_RETRY_ATTEMPTS`: local runner, with an on-failure queue: retries of a failing
    /// batch before its descriptor goes to the queue, a count (default 5, the Terraform default
    /// of `consumer_max_retry_attempts`).
    pub runner_max_retry_attempts: u32,
    /// `METRICS_ADDR`: local runner Prometheus endpoint (default 127.0.0.1:9102).
    pub metrics_addr: SocketAddr,
}

impl FromEnv for Config {
    fn from_settings<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, KitError> {
        Ok(Config {
            lake_bucket: env.required("LAKE_BUCKET")?,
            dynamodb_table: env.required("DYNAMODB_TABLE")?,
            database: DatabaseConfig::from_settings(env)?,
            migrator: DatabaseConfig::migrator_from_settings(env)?,
            dedup_window_hours: env.parse_or("DEDUP_WINDOW_HOURS", 24)?,
            dynamodb_ttl: site_ttl(env)?,
            dynamodb_concurrency: env.parse_or("DYNAMODB_CONCURRENCY", 16usize)?.max(1),
            sink_budget: env.millis_or("SINK_BUDGET_MS", 20_000)?,
            stream_name: env.get("STREAM_NAME"),
            runner_batch_size: env.parse_or("RUNNER_BATCH_SIZE", 10_000usize)?.clamp(1, 10_000),
            runner_batch_max_bytes: env.parse_or("RUNNER_BATCH_MAX_BYTES", 4usize << 20)?.max(1),
            runner_batch_window: env.millis_or("RUNNER_BATCH_WINDOW_MS", 500)?,
            runner_max_attempts: env.parse_or("RUNNER_MAX_ATTEMPTS", 5u32)?.max(1),
            runner_on_failure_queue_url: env.get("RUNNER_ON_FAILURE_QUEUE_URL"),
            runner_max_retry_attempts: env.parse_or("RUNNER_MAX_RETRY_ATTEMPTS", 5u32)?,
            metrics_addr: env.parse_or("METRICS_ADDR", SocketAddr::from(([127, 0, 0, 1], 9102)))?,
        })
    }
}

/// The item lifetimes: `DYNAMODB_TTL_DAYS` and the sites file's per-site `dynamodb_ttl_days`.
fn site_ttl<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<SiteTtl, KitError> {
    let default_days: u32 = env.parse_or("DYNAMODB_TTL_DAYS", 30)?;
    if default_days == 0 {
        return Err(env.invalid("DYNAMODB_TTL_DAYS", "must be at least 1 (an item would be born expired)"));
    }
    if let Some(text) = env.get("SITES_JSON") {
        return SiteTtl::from_sites_json(&text, default_days).map_err(|e| env.invalid("SITES_JSON", e));
    }
    match env.get("SITES_CONFIG") {
        Some(path) => std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {path}: {e}"))
            .and_then(|text| SiteTtl::from_sites_json(&text, default_days))
            .map_err(|e| env.invalid("SITES_CONFIG", e)),
        None => Ok(SiteTtl::uniform(default_days)),
    }
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

    /// A site's own `dynamodb_ttl_days` wins over `DYNAMODB_TTL_DAYS`; `SITES_JSON` over `SITES_CONFIG`.
    #[test]
    fn item_lifetimes_come_from_the_sites_file() {
        let base = |k: &str| matches!(k, "LAKE_BUCKET" | "DYNAMODB_TABLE" | "DATABASE_URL").then(|| "x".to_owned());
        let c = Config::from_lookup(|k| match k {
            "SITES_JSON" => Some(r#"{"sites": [{"id": "shop", "dynamodb_ttl_days": 7}]}"#.into()),
            "SITES_CONFIG" => Some("/nonexistent".into()),
            "DYNAMODB_TTL_DAYS" => Some("45".into()),
            _ => base(k),
        })
        .unwrap();
        assert_eq!((c.dynamodb_ttl.days_for(Some("shop")), c.dynamodb_ttl.days_for(Some("blog"))), (7, 45));
        let local = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sites.json");
        let c = Config::from_lookup(|k| if k == "SITES_CONFIG" { Some(local.into()) } else { base(k) }).unwrap();
        assert_eq!(c.dynamodb_ttl.default_days, 30);
        assert_eq!(Config::from_lookup(base).unwrap().dynamodb_ttl, SiteTtl::uniform(30));
        for bad in [("SITES_CONFIG", "/nonexistent"), ("SITES_JSON", "[]"), ("DYNAMODB_TTL_DAYS", "0")] {
            let err = Config::from_lookup(|k| if k == bad.0 { Some(bad.1.into()) } else { base(k) }).unwrap_err();
            assert!(err.to_string().contains(bad.0), "{err}");
        }
    }
}
