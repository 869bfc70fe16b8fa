//! `verify`: reconciles the API's acknowledgements against every store; exits 1 on any mismatch.
//!
//! Usage: `verify [--wait SECS] [--forgotten ACK_LOG] ACK_LOG...` with the pipeline's environment
//! (`scripts/env.sh`). `--forgotten` (repeatable) names ack lines of events whose visitors `forget`
//! erased: they must be gone from the lake and DynamoDB and still counted in PostgreSQL.

// A command-line report: the table on stdout is its output.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use loadtest::acks::{Acks, parse_acks};
use loadtest::reconcile::{Observed, reconcile};
use loadtest::stores::Stores;
use service_kit::aws::{self, Retries};
use service_kit::env;
use service_kit::s3::Bucket;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut wait = Duration::from_secs(120);
    let mut files = Vec::new();
    let mut forgotten = Acks::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--wait" => wait = Duration::from_secs(args.next().context("--wait SECS")?.parse()?),
            "--forgotten" => {
                let f = args.next().context("--forgotten ACK_LOG")?;
                let text = std::fs::read_to_string(&f).with_context(|| format!("reading {f}"))?;
                parse_acks(&text, &mut forgotten)?;
            }
            "-h" | "--help" => {
                eprintln!(
                    "usage: verify [--wait SECS] [--forgotten ACK_LOG]... ACK_LOG...   (env: STREAM_NAME LAKE_BUCKET DYNAMODB_TABLE DATABASE_URL)"
                );
                return Ok(());
            }
            f => files.push(f.to_owned()),
        }
    }
    let mut acks = Acks::new();
    for f in &files {
        parse_acks(&std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?, &mut acks)?;
    }
    let env = env::process();
    // The verifier only reads, with no retry loops of its own: the SDK retries every call.
    let sdk = aws::load().await;
    let stores = Stores {
        kinesis: aws::kinesis(&sdk, Retries::Sdk),
        lake: Bucket::new(aws::s3(&sdk, Retries::Sdk), env.required("LAKE_BUCKET")?),
        dynamo: aws::dynamodb(&sdk, Retries::Sdk),
        pg: sqlx::PgPool::connect(&env.required("DATABASE_URL")?).await.context("connecting to PostgreSQL")?,
        stream: env.required("STREAM_NAME")?,
        table: env.required("DYNAMODB_TABLE")?,
    };

    // Wait until the consumer has claimed every acknowledged event, then give the concurrent
    // sink writes of the last batches a moment; after that, re-check until stable or timeout.
    let started = Instant::now();
    let ids: Vec<uuid::Uuid> = acks.keys().copied().collect();
    loop {
        let claimed = stores.claimed(&ids).await?;
        if claimed == ids.len() {
            break;
        }
        if started.elapsed() > wait {
            eprintln!("verify: only {claimed} of {} acknowledged events claimed after {wait:?}", ids.len());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let catch_up = started.elapsed();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (lake, files) = stores.lake_view().await?;
        let observed = Observed {
            acks: acks.clone(),
            stream: stores.stream_view().await?,
            lake,
            dynamo: stores.dynamo_view().await?,
            pg_counts: stores.pg_counts().await?,
            site_hourly: stores.site_hourly().await?,
            site_pages: stores.site_pages().await?,
            site_countries: stores.site_countries().await?,
            quarantined: stores.quarantined().await?,
            erased: forgotten.keys().copied().collect(),
        };
        let report = reconcile(&observed);
        if report.ok || started.elapsed() > wait {
            println!("{}", report.table);
            println!("parquet files: {files}   caught up after {:.1} s", catch_up.as_secs_f64());
            if report.ok {
                println!("verify: OK — {} acknowledged events, nothing lost, nothing double-counted", acks.len());
                return Ok(());
            }
            for p in &report.problems {
                eprintln!("verify: MISMATCH {p}");
            }
            bail!("{} mismatches", report.problems.len());
        }
    }
}
