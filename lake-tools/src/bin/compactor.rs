//! compactor entry point: flags or the Lambda payload, configuration and clients, then one run.
//!
//! Lambda (`AWS_LAMBDA_RUNTIME_API` set): each scheduled invocation compacts the latest closed
//! hours; the payload is ignored except an optional `{"hours_back": N}`. Locally it is a
//! command (`compactor --help`). The exit status is 1 when any partition failed (the next run
//! retries it).

use anyhow::bail;
use chrono::{NaiveDateTime, Utc};
use clap::Parser;
use lake_tools::compact::plan::{self, DEFAULT_CHUNK_INPUT_BYTES, DEFAULT_HOURS_BACK, Limits};
use lake_tools::compact::store::LakeFiles;
use lake_tools::compact::{Compactor, PartitionReport};
use lambda_runtime::{LambdaEvent, service_fn};
use schemas::lake::Partition;
use service_kit::aws::{self, Retries};
use service_kit::env::{self, FromEnv};
use service_kit::postgres::{self, Database, DatabaseConfig};
use service_kit::telemetry;

/// Compacts closed hour partitions of the lake: many micro-batch Parquet files into a few large
/// sorted ones, each event once. Crash-safe and idempotent: run it again after any failure.
///
/// Reads LAKE_BUCKET and the database settings (DATABASE_URL, or DATABASE_SECRET_ARN with
/// DATABASE_HOST/PORT/NAME, and DATABASE_SSL_ROOT_CERT) from the environment, like the consumer.
#[derive(Debug, Parser)]
#[command(name = "compactor", version)]
struct Args {
    /// Compact this one hour (UTC), written YYYY-MM-DDTHH; it must have ended at least 10
    /// minutes ago, unless --include-open.
    #[arg(long, value_parser = parse_hour, conflicts_with = "hours_back", value_name = "YYYY-MM-DDTHH")]
    hour: Option<Partition>,
    /// Compact the N latest closed hours, newest first (with --include-open: the N latest
    /// hours, the current one first).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HOURS_BACK)]
    hours_back: u32,
    /// Also compact hours that are not closed: the current hour, and the last one during its
    /// 10-minute grace. Exact at any time — a batch written after the run is a new file the
    /// next run merges, and a redelivered batch of a compacted object writes nothing — but
    /// wasteful while batches still arrive; meant for when the consumer has drained (`make demo`).
    #[arg(long)]
    include_open: bool,
    /// Input merged into one output file, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_CHUNK_INPUT_BYTES >> 20)]
    chunk_mb: u64,
}

fn parse_hour(v: &str) -> Result<Partition, String> {
    NaiveDateTime::parse_from_str(&format!("{v}:00:00"), "%Y-%m-%dT%H:%M:%S")
        .map(|at| Partition::of(at.and_utc()))
        .map_err(|e| format!("expected YYYY-MM-DDTHH: {e}"))
}

/// Connections per compactor: one holds a partition's lock and does all its SQL.
const POOL_MAX_CONNECTIONS: u32 = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Flags first, so `--help` works without any configuration.
    let args = (!telemetry::on_lambda()).then(Args::parse);
    telemetry::init_tracing();
    let env = env::process();
    let bucket = env.required("LAKE_BUCKET")?;
    let database = DatabaseConfig::from_settings(&env)?;
    let sdk = aws::load().await;
    // No retry loop of ours around single S3 calls: the SDK retries them (ARCHITECTURE.md).
    let files = LakeFiles::new(aws::s3(&sdk, Retries::Sdk), bucket);
    let secrets = database.needs_secret().then(|| aws::secrets_manager(&sdk, Retries::Sdk));
    let db = Database::connect(database, secrets, "compactor", POOL_MAX_CONNECTIONS).await?;

    let Some(args) = args else {
        let compactor = std::sync::Arc::new(Compactor::new(files, db, Limits::default()));
        let handler = service_fn(move |event: LambdaEvent<serde_json::Value>| {
            let compactor = compactor.clone();
            async move {
                let hours_back =
                    event.payload.get("hours_back").and_then(|v| v.as_u64()).map_or(DEFAULT_HOURS_BACK, |n| n as u32);
                let reports = compactor.compact_hours(Utc::now(), hours_back).await;
                summarize(&reports).map_err(lambda_runtime::Error::from)
            }
        });
        return lambda_runtime::run(handler).await.map_err(|e| anyhow::anyhow!(e));
    };

    postgres::MIGRATOR.run(db.pool()).await?;
    let compactor = Compactor::new(files, db, Limits::with_chunk_bytes(args.chunk_mb.max(1) << 20));
    let reports = match args.hour {
        Some(p) => {
            if !args.include_open && !plan::is_closed(&p, Utc::now()) {
                bail!(
                    "hour {} is not closed yet (it must have ended {} minutes ago; --include-open compacts it anyway)",
                    p.path(),
                    plan::CLOSE_GRACE_MINUTES
                );
            }
            vec![compactor.compact_partition(&p).await.unwrap_or_else(|e| PartitionReport {
                partition: p.path(),
                error: Some(e.to_string()),
                ..Default::default()
            })]
        }
        None if args.include_open => compactor.compact_each(plan::recent_hours(Utc::now(), args.hours_back)).await,
        None => compactor.compact_hours(Utc::now(), args.hours_back).await,
    };
    summarize(&reports)?;
    Ok(())
}

/// Logs one summary line and returns it, or an error naming the failed partitions.
fn summarize(reports: &[PartitionReport]) -> anyhow::Result<serde_json::Value> {
    let failed: Vec<&str> = reports.iter().filter(|r| r.error.is_some()).map(|r| r.partition.as_str()).collect();
    let worked: Vec<&PartitionReport> = reports.iter().filter(|r| r.outputs > 0 || r.leftovers_deleted > 0).collect();
    let summary = serde_json::json!({
        "partitions": reports.len(),
        "compacted": worked,
        "failed": failed,
    });
    tracing::info!(summary = %summary, "compaction run done");
    if !failed.is_empty() {
        bail!("compaction failed for {}", failed.join(", "));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn args(s: &str) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("compactor").chain(s.split_whitespace()))
    }

    #[test]
    fn parses_the_command_line() {
        let a = args("--hour 2024-05-01T07 --chunk-mb 2").unwrap();
        assert_eq!(a.hour, Some(Partition::of("2024-05-01T07:00:00Z".parse().unwrap())));
        assert_eq!(a.chunk_mb, 2);
        let defaults = args("").unwrap();
        assert_eq!((defaults.hour, defaults.hours_back, defaults.chunk_mb), (None, DEFAULT_HOURS_BACK, 256));
        assert!(!defaults.include_open);
        assert!(args("--hour 2024-05-01T07 --include-open").unwrap().include_open);
        assert!(args("--hours-back 2 --include-open").unwrap().include_open);
        assert_eq!(args("--hours-back 3").unwrap().hours_back, 3);
        assert!(args("--hour 2024-05-01").is_err());
        assert!(args("--bogus").is_err());
        assert!(args("--hour 2024-05-01T07 --hours-back 3").is_err(), "one target at a time");
        Args::command().debug_assert();
    }
}
