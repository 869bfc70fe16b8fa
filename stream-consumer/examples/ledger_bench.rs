//! `ledger_bench`: the consumer's claim + aggregate transaction alone, N concurrent writers.
//!
//! For each writer count it creates a fresh database, applies the migrations, optionally fills
//! the ledger as earlier hours would have, then lets N writers commit synthetic 500-event
//! batches (`stream_consumer::testing::ledger_load`) through `PgLedger::claim` — the very transaction the
//! consumer runs — for a fixed time. It reports events/s, commit time quantiles, WAL bytes and
//! ledger growth per event, checks the counts are exact, and times a prune of what was written.
//! `scripts/ledger-bench.sh` runs it against the local PostgreSQL; see bench/RESULTS.md.

// A command-line report: the table on stdout is its output.
#![allow(clippy::print_stdout)]

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use service_kit::postgres::Database;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};
use stream_consumer::handler::{ROLLUP_EVERY, STATISTICS_EVERY};
use stream_consumer::ledger::Ledger;
use stream_consumer::plan::ClaimStatus;
use stream_consumer::sinks::postgres::PgLedger;
use stream_consumer::testing::ledger_load::{Pools, quantile};
use uuid::Uuid;

/// The claim + aggregate transaction under concurrent writers.
#[derive(Parser, Debug)]
#[command(name = "ledger_bench")]
struct Args {
    /// Writer counts to measure, each against a fresh database.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    writers: Vec<usize>,
    /// How long each writer count runs, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Events per batch (the consumer's Lambda batch size).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Share of each batch's events that repeat an ID another batch claimed.
    #[arg(long, default_value_t = 0.01)]
    duplicates: f64,
    /// Ledger rows written before the measured run, as a deployment's earlier hours would have.
    #[arg(long, default_value_t = 0)]
    prefill: u64,
    /// A superuser connection (to create the bench database and the `hll` extension).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    admin_url: String,
    /// The scratch database, dropped and created for each writer count.
    #[arg(long, default_value = "ledger_bench")]
    database: String,
}

/// What one writer count measured.
#[derive(Default)]
struct Run {
    writers: usize,
    events: u64,
    new_events: u64,
    batches: usize,
    elapsed: Duration,
    commit_ms: Vec<f64>,
    /// Time of each rollup a writer ran (none before migration 0009).
    rollup_ms: Vec<f64>,
    wal_bytes: f64,
    ledger_bytes: f64,
    prune_rows: u64,
    prune: Duration,
    prune_wal_bytes: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.database.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "--database: lower case and _ only");
    println!(
        "ledger_bench: {} events per batch, {:.0}% repeated IDs, {} s per writer count, {} ledger rows before each run",
        args.batch,
        args.duplicates * 100.0,
        args.seconds,
        args.prefill
    );
    println!();
    println!(
        "| writers | events/s | batches | commit p50 | commit p99 | commit max | rollups, p99 | WAL bytes/event | ledger bytes/event | prune: rows, time, WAL bytes/row |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for &writers in &args.writers {
        let run = run(&args, writers).await?;
        let mut ms = run.commit_ms.clone();
        ms.sort_by(f64::total_cmp);
        let mut rollups = run.rollup_ms.clone();
        rollups.sort_by(f64::total_cmp);
        println!(
            "| {} | {:.0} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {}, {:.0} ms | {:.0} | {:.0} | {}, {:.2} s, {:.0} |",
            run.writers,
            run.events as f64 / run.elapsed.as_secs_f64(),
            run.batches,
            quantile(&ms, 0.5),
            quantile(&ms, 0.99),
            quantile(&ms, 1.0),
            rollups.len(),
            if rollups.is_empty() { 0.0 } else { quantile(&rollups, 0.99) },
            run.wal_bytes / run.events as f64,
            run.ledger_bytes / run.new_events.max(1) as f64,
            run.prune_rows,
            run.prune.as_secs_f64(),
            run.prune_wal_bytes / run.prune_rows.max(1) as f64,
        );
    }
    Ok(())
}

/// One writer count against a fresh database.
async fn run(args: &Args, writers: usize) -> anyhow::Result<Run> {
    let options = fresh_database(args).await?;
    let setup = PgLedger::connect(options.clone());
    setup.migrate().await?;
    let db = setup.pool();
    prefill(&setup, args.prefill).await?;
    sqlx::raw_sql("CHECKPOINT; ANALYZE").execute(db).await?;
    let wal_start = wal_lsn(db).await?;
    let ledger_start = ledger_bytes(db).await?;

    let pools = Arc::new(Pools::default());
    let recent: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    // Every writer connects before the clock starts: connecting is not what is measured.
    let mut ledgers = Vec::new();
    for _ in 0..writers {
        // One connection each, as a consumer's batch uses one at a time (claim, then rollup):
        // 64 writers with the consumer's pool of two could pass the server's max_connections.
        let ledger = PgLedger::new(Database::with_options(options.clone(), 1));
        drop(ledger.pool().acquire().await.context("connecting a writer")?);
        ledgers.push(ledger);
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (w, ledger) in ledgers.into_iter().enumerate() {
        let (pools, recent) = (pools.clone(), recent.clone());
        tasks.push(tokio::spawn(writer(w, ledger, pools, recent, args.batch, args.duplicates, deadline)));
    }
    let mut run = Run { writers, ..Run::default() };
    for task in tasks {
        let (ms, rollups, events, new_events) = task.await??;
        run.batches += ms.len();
        run.commit_ms.extend(ms);
        run.rollup_ms.extend(rollups);
        run.events += events;
        run.new_events += new_events;
    }
    run.elapsed = started.elapsed();
    run.wal_bytes = wal_since(db, &wal_start).await?;
    run.ledger_bytes = ledger_bytes(db).await? - ledger_start;

    // Exactly once: every event claimed new is counted once, in every table.
    let counted: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(event_count), 0)::int8 FROM event_type_counts").fetch_one(db).await?;
    let site_hourly: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(events), 0)::int8 FROM site_hourly").fetch_one(db).await?;
    ensure!(
        counted == i64::try_from(run.new_events)? && site_hourly == counted,
        "counts are not exact: {} claimed new, {counted} in event_type_counts, {site_hourly} in site_hourly",
        run.new_events
    );

    (run.prune_rows, run.prune, run.prune_wal_bytes) = forget_everything(&setup).await?;
    db.close().await;
    Ok(run)
}

/// The scratch database, dropped and created anew; returns its connection options.
async fn fresh_database(args: &Args) -> anyhow::Result<PgConnectOptions> {
    let admin = PgConnectOptions::from_str(&args.admin_url).context("--admin-url")?;
    let mut conn = admin.connect().await.context("connecting as the admin")?;
    // The name was checked to be lower-case letters and `_` only, so formatting it in is safe.
    // Two statements: neither may run in the transaction a multi-statement string would be.
    for sql in [
        format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", args.database),
        format!("CREATE DATABASE {}", args.database),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
    }
    conn.close().await?;
    Ok(admin.database(&args.database).application_name("ledger_bench"))
}

/// What one writer measured: commit and rollup times (ms), events claimed, events new.
type WriterResult = (Vec<f64>, Vec<f64>, u64, u64);

/// One writer: claims batches until `deadline`, rolling up as a consumer process does.
async fn writer(
    w: usize,
    ledger: PgLedger,
    pools: Arc<Pools>,
    recent: Arc<Mutex<Vec<Uuid>>>,
    size: usize,
    duplicates: f64,
    deadline: Instant,
) -> anyhow::Result<WriterResult> {
    let mut rng = fastrand::Rng::with_seed(w as u64);
    let (mut commit_ms, mut rollup_ms, mut events, mut new_events) = (Vec::new(), Vec::new(), 0u64, 0u64);
    let mut last_rollup = Instant::now();
    let mut last_statistics = None::<Instant>;
    while Instant::now() < deadline {
        let sample = recent.lock().map(|r| r.clone()).unwrap_or_default();
        let owner = rng.i64(..);
        let batch = pools.batch(&mut rng, size, duplicates, &sample, owner);
        let t = Instant::now();
        let statuses =
            ledger.claim(&batch.claims, &batch.objects, |new| pools.counts(&batch, new, chrono::Utc::now())).await?;
        commit_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        events += batch.claims.len() as u64;
        new_events += statuses.iter().filter(|s| **s == ClaimStatus::New).count() as u64;
        // As each consumer process does (handler.rs, ROLLUP_EVERY), outside the claim's time.
        if last_rollup.elapsed() >= ROLLUP_EVERY {
            last_rollup = Instant::now();
            if ledger.rollup().await?.is_some() {
                rollup_ms.push(last_rollup.elapsed().as_secs_f64() * 1000.0);
            }
        }
        // Likewise the ledger's planner statistics (migration 0010), on the writer's time.
        if last_statistics.is_none_or(|t: Instant| t.elapsed() >= STATISTICS_EVERY) {
            last_statistics = Some(Instant::now());
            ledger.refresh_statistics().await?;
        }
        if let Ok(mut r) = recent.lock() {
            r.extend(batch.claims.iter().step_by(50).map(|c| c.event_id));
            let excess = r.len().saturating_sub(10_000);
            r.drain(..excess);
        }
    }
    Ok((commit_ms, rollup_ms, events, new_events))
}

/// Claims `rows` new events through the ledger itself (10,000 per transaction, nothing counted),
/// so the ledger holds what earlier hours would have left, whatever its schema.
async fn prefill(ledger: &PgLedger, rows: u64) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(u64::MAX);
    let pools = Pools::default();
    let mut left = rows;
    while left > 0 {
        let n = left.min(10_000);
        let owner = rng.i64(..);
        let batch = pools.batch(&mut rng, usize::try_from(n)?, 0.0, &[], owner);
        ledger.claim(&batch.claims, &batch.objects, |_| Default::default()).await?;
        left -= n;
    }
    Ok(())
}

/// Forgets every claim made so far, as the ledger's own prune does once they are older than
/// the dedup window: before migration 0008 a `DELETE` of the rows (a window of 0 hours), after
/// it by dropping the day's partition once the epoch has moved on (here moved by hand, as the
/// next day would). Returns the claims forgotten, the time and the WAL bytes the prune took.
async fn forget_everything(ledger: &PgLedger) -> anyhow::Result<(u64, Duration, f64)> {
    let db = ledger.pool();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM seen_events").fetch_one(db).await?;
    let partitioned: bool = sqlx::query_scalar("SELECT to_regclass('ledger_epoch') IS NOT NULL").fetch_one(db).await?;
    if partitioned {
        sqlx::raw_sql("UPDATE ledger_epoch SET day = day + 1; SELECT ledger_add_partition(day) FROM ledger_epoch")
            .execute(db)
            .await?;
    }
    let wal = wal_lsn(db).await?;
    let t = Instant::now();
    if partitioned {
        sqlx::query("SELECT ledger_prune(now() + interval '2 days')").execute(db).await?;
    } else {
        ledger.prune(0).await?;
    }
    let took = t.elapsed();
    let wal_bytes = wal_since(db, &wal).await?;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM seen_events").fetch_one(db).await?;
    ensure!(left == 0, "the prune left {left} of {rows} claims");
    Ok((u64::try_from(rows)?, took, wal_bytes))
}

async fn wal_lsn(db: &sqlx::PgPool) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text").fetch_one(db).await?)
}

async fn wal_since(db: &sqlx::PgPool, start: &str) -> anyhow::Result<f64> {
    let row = sqlx::query("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::pg_lsn)::float8")
        .bind(start)
        .fetch_one(db)
        .await?;
    Ok(row.get(0))
}

/// The ledger's size on disk: `seen_events` with its indexes (every partition, if partitioned).
async fn ledger_bytes(db: &sqlx::PgPool) -> anyhow::Result<f64> {
    let row = sqlx::query(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::float8 FROM pg_class c
         WHERE c.relkind = 'r' AND (c.relname = 'seen_events' OR c.oid IN (
             SELECT inhrelid FROM pg_inherits WHERE inhparent = 'seen_events'::regclass))",
    )
    .fetch_one(db)
    .await?;
    Ok(row.get(0))
}
