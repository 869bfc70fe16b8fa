//! compactor entry point: configuration and clients, then hourly Lambda invocations or one local run.
//!
//! Lambda (`AWS_LAMBDA_RUNTIME_API` set): each invocation compacts the latest closed hours; the
//! payload is ignored except an optional `{"hours_back": N}`. Locally:
//!
//! ```text
//! compactor [--hour YYYY-MM-DDTHH | --hours-back N] [--chunk-mb N]
//! ```
//!
//! The exit status is 1 when any partition failed (the next run retries it).

use anyhow::{Context, bail};
use chrono::{NaiveDateTime, Utc};
use lambda_runtime::{LambdaEvent, service_fn};
use schemas::lake::Partition;
use stream_consumer::compact::plan::{self, DEFAULT_HOURS_BACK, Limits};
use stream_consumer::compact::store::LakeFiles;
use stream_consumer::compact::{Compactor, PartitionReport};
use stream_consumer::sinks::postgres::{PgLedger, connect_options};
use stream_consumer::{Config, s3_client, telemetry};

/// What to compact in a local run.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Hour(Partition),
    Recent(u32),
}

fn parse_args(args: &[String]) -> anyhow::Result<(Target, Limits)> {
    let mut target = Target::Recent(DEFAULT_HOURS_BACK);
    let mut limits = Limits::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--hour" => {
                let v = value()?;
                let at = NaiveDateTime::parse_from_str(&format!("{v}:00:00"), "%Y-%m-%dT%H:%M:%S")
                    .with_context(|| format!("--hour {v}: expected YYYY-MM-DDTHH"))?;
                target = Target::Hour(Partition::of(at.and_utc()));
            }
            "--hours-back" => target = Target::Recent(value()?.parse().context("--hours-back")?),
            "--chunk-mb" => {
                let mb: u64 = value()?.parse().context("--chunk-mb")?;
                limits = Limits::with_chunk_bytes(mb.max(1) * 1024 * 1024);
            }
            other => bail!(
                "unknown argument {other:?}; usage: compactor [--hour YYYY-MM-DDTHH | --hours-back N] [--chunk-mb N]"
            ),
        }
    }
    Ok((target, limits))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    // The compactor never touches DynamoDB, but `Config` requires the table name; nothing reads
    // this placeholder.
    let config = Config::from_lookup(|k| {
        std::env::var(k).ok().filter(|v| !v.is_empty()).or_else(|| (k == "DYNAMODB_TABLE").then(|| "unused".into()))
    })?;
    let aws = aws_config::load_from_env().await;
    let secrets = matches!(config.database, stream_consumer::config::DatabaseSource::Secret { .. })
        .then(|| aws_sdk_secretsmanager::Client::new(&aws));
    let ledger = PgLedger::connect(connect_options(&config, secrets.as_ref()).await?).await?;
    let files = LakeFiles::new(s3_client(&aws), config.lake_bucket.clone());

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        let compactor = std::sync::Arc::new(Compactor::new(files, ledger, Limits::default()));
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
    }

    let args: Vec<String> = std::env::args().skip(1).collect();
    let (target, limits) = parse_args(&args)?;
    ledger.migrate().await.context("applying migrations")?;
    let compactor = Compactor::new(files, ledger, limits);
    let reports = match target {
        Target::Hour(p) => {
            if !plan::is_closed(&p, Utc::now()) {
                bail!(
                    "hour {} is not closed yet (it must have ended {} minutes ago)",
                    p.path(),
                    plan::CLOSE_GRACE_MINUTES
                );
            }
            match compactor.compact_partition(&p).await {
                Ok(r) => vec![r],
                Err(e) => {
                    vec![PartitionReport { partition: p.path(), error: Some(e.to_string()), ..Default::default() }]
                }
            }
        }
        Target::Recent(n) => compactor.compact_hours(Utc::now(), n).await,
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

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_the_command_line() {
        let (target, limits) = parse_args(&args("--hour 2024-05-01T07 --chunk-mb 2")).unwrap();
        assert_eq!(target, Target::Hour(Partition::of("2024-05-01T07:00:00Z".parse().unwrap())));
        assert_eq!(limits.chunk_input_bytes, 2 * 1024 * 1024);
        assert_eq!(parse_args(&[]).unwrap().0, Target::Recent(DEFAULT_HOURS_BACK));
        assert_eq!(parse_args(&args("--hours-back 3")).unwrap().0, Target::Recent(3));
        assert!(parse_args(&args("--hour 2024-05-01")).is_err());
        assert!(parse_args(&args("--bogus")).is_err());
    }
}
