//! retention entry point: settings and clients, then one pass over every store.
//!
//! The local stack's stand-in for S3 lifecycle rules and DynamoDB TTL (README, "Retention"):
//! `make retention` runs it once, and the local schedule (`scripts/schedule.sh`) runs it with
//! the compactor. The exit status is 1 when a step failed (the next run retries it).

use anyhow::bail;
use chrono::Utc;
use clap::Parser;
use lake_tools::items::EventItems;
use lake_tools::retention::plan::Retention;
use lake_tools::retention::store::LakePrefixes;
use lake_tools::retention::{RetentionReport, RetentionRun};
use service_kit::aws::{self, Retries};
use service_kit::env::{self, FromEnv};
use service_kit::postgres::{self, Database, DatabaseConfig};
use service_kit::telemetry;

/// Deletes what has outlived its store's retention: lake and dead-letter hour partitions (with
/// their visitor-index rows), expired DynamoDB items, old ledger days and erasure audit rows.
/// Idempotent: a second run deletes nothing more.
///
/// Reads LAKE_BUCKET, DYNAMODB_TABLE (optional: no DynamoDB step without it), the database
/// settings as the consumer does, and LAKE_RETENTION_DAYS (395), DEAD_LETTER_RETENTION_DAYS
/// (30), ERASURE_AUDIT_RETENTION_DAYS (1095) and DEDUP_WINDOW_HOURS (24); 0 days keeps forever.
#[derive(Debug, Parser)]
#[command(name = "retention", version)]
struct Args {}

/// Connections: one holds a partition's lock and deletes its index rows, one for the rest.
const POOL_MAX_CONNECTIONS: u32 = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Flags first, so `--help` works without any configuration.
    Args::parse();
    telemetry::init_tracing();
    let env = env::process();
    let retention = Retention::from_settings(&env)?;
    let bucket = env.required("LAKE_BUCKET")?;
    let table = env.get("DYNAMODB_TABLE");
    let database = DatabaseConfig::from_settings(&env)?;
    let sdk = aws::load().await;
    // S3 calls are single calls the SDK retries; DynamoDB's unprocessed deletes are our loop's
    // (ARCHITECTURE.md, "Who retries").
    let lake = LakePrefixes::new(aws::s3(&sdk, Retries::Sdk), bucket);
    let items = table.map(|t| EventItems::new(aws::dynamodb(&sdk, Retries::Ours), t));
    let secrets = database.needs_secret().then(|| aws::secrets_manager(&sdk, Retries::Sdk));
    let db = Database::connect(database, secrets, "retention", POOL_MAX_CONNECTIONS).await?;
    postgres::MIGRATOR.run(db.pool()).await?;

    let report = RetentionRun { lake, items, db, retention }.run(Utc::now()).await;
    summarize(&report)
}

/// Logs one summary line; an error naming the failed steps.
fn summarize(report: &RetentionReport) -> anyhow::Result<()> {
    let line = serde_json::to_string(report).unwrap_or_default();
    tracing::info!(report = %line, "retention run done");
    if !report.errors.is_empty() {
        bail!("retention failed: {}", report.errors.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn parses_the_command_line() {
        Args::command().debug_assert();
        assert!(Args::try_parse_from(["retention"]).is_ok());
        assert!(Args::try_parse_from(["retention", "--bogus"]).is_err());
    }
}
