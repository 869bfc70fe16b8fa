//! Compaction against the local stack (moto S3, PostgreSQL): closed hours of micro-batch files
//! become a few sorted files holding every event exactly once, whatever point a run stops at and
//! however batches are redelivered afterwards. Each test names the invariant it guards.

#[path = "../../stream-consumer/tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use lake_tools::compact::plan::{self, Limits};
use lake_tools::compact::store::LakeFiles;
use lake_tools::compact::{Compactor, Halt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use schemas::lake::Partition;
use service_kit::postgres::Database;
use sqlx::Row;
use stream_consumer::Pipeline;
use stream_consumer::decode::InputRecord;
use stream_consumer::sinks::dynamo::{CallFailure, Item, ItemStore};
use stream_consumer::sinks::postgres::PgLedger;
use stream_consumer::sinks::s3::S3Lake;
use stream_consumer::testing::{record_of, sample_event, seq};
use support::TestEnv;

/// DynamoDB is not what these tests are about, and 60 000 items in dynalite take a minute.
struct NullItems;

impl ItemStore for NullItems {
    async fn write_batch(&self, _items: Vec<Item>) -> Result<Vec<Item>, CallFailure> {
        Ok(Vec::new())
    }
}

const TYPES: [&str; 4] = ["page_view", "click", "add_to_cart", "purchase"];

fn hour(h: u32) -> DateTime<Utc> {
    format!("2024-05-01T{h:02}:00:00Z").parse().unwrap()
}

/// `files` batches of `rows` events received during `start`'s hour; each batch becomes one
/// micro-batch object. Sequence numbers start at `first_seq`. Returns the batches and event IDs.
fn hour_batches(
    start: DateTime<Utc>,
    files: usize,
    rows: usize,
    first_seq: usize,
) -> (Vec<Vec<InputRecord>>, Vec<String>) {
    let total = files * rows;
    let mut ids = Vec::with_capacity(total);
    let batches = (0..files)
        .map(|f| {
            (0..rows)
                .map(|r| {
                    let i = f * rows + r;
                    let received = start + Duration::milliseconds((i as i64) * 3_599_000 / total as i64);
                    let event = sample_event(TYPES[(i * 7 + f) % TYPES.len()], None, received);
                    ids.push(event.event_id.to_string());
                    record_of(&seq(first_seq + i), &event)
                })
                .collect()
        })
        .collect();
    (batches, ids)
}

fn pipeline(env: &TestEnv) -> Pipeline<S3Lake, NullItems, PgLedger> {
    env.pipeline_with(NullItems)
}

async fn ingest(p: &Pipeline<S3Lake, NullItems, PgLedger>, batches: &[Vec<InputRecord>]) {
    for b in batches {
        p.process(b).await.unwrap();
    }
}

fn compactor(env: &TestEnv, limits: Limits) -> Compactor {
    Compactor::new(
        LakeFiles::new(env.s3.clone(), env.bucket.clone()),
        Database::from_pool(env.ledger.pool().clone()),
        limits,
    )
}

fn prefix(start: DateTime<Utc>) -> String {
    plan::partition_prefix(&Partition::of(start))
}

fn rows_of(body: Bytes) -> Vec<(String, i64, String)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(body).unwrap().build().unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let types = batch.column_by_name("event_type").unwrap().as_string::<i32>().clone();
        let times = batch.column_by_name("occurred_at").unwrap().as_primitive::<TimestampMillisecondType>().clone();
        let ids = batch.column_by_name("event_id").unwrap().as_string::<i32>().clone();
        for r in 0..batch.num_rows() {
            out.push((types.value(r).to_owned(), times.value(r), ids.value(r).to_owned()));
        }
    }
    out
}

/// Every event ID in the partition's files, with repeats.
async fn partition_ids(env: &TestEnv, prefix: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for key in env.keys(prefix).await {
        ids.extend(rows_of(env.object(&key).await).into_iter().map(|(_, _, id)| id));
    }
    ids
}

async fn assert_exactly_once(env: &TestEnv, prefix: &str, expected: &[String]) {
    let mut found = partition_ids(env, prefix).await;
    found.sort();
    let mut want = expected.to_vec();
    want.sort();
    let distinct: HashSet<&String> = found.iter().collect();
    assert_eq!(distinct.len(), want.len(), "distinct events in {prefix}");
    assert_eq!(found.len(), want.len(), "{} duplicate rows in {prefix}", found.len() - distinct.len());
    assert_eq!(found, want, "the events in {prefix} are not the ones sent");
}

/// Checks no event is missing after a stopped run; returns (micro files, compacted files,
/// duplicate rows) — the state a query would see.
async fn assert_nothing_lost(env: &TestEnv, prefix: &str, expected: &[String]) -> (usize, usize, usize) {
    let rows = partition_ids(env, prefix).await;
    let found: HashSet<&String> = rows.iter().collect();
    let missing = expected.iter().filter(|id| !found.contains(*id)).count();
    assert_eq!(missing, 0, "{missing} events missing from {prefix} after a stopped run");
    let keys = env.keys(prefix).await;
    let compacted = keys.iter().filter(|k| plan::is_compacted(k)).count();
    (keys.len() - compacted, compacted, rows.len() - found.len())
}

/// Every file is compacted, and each is sorted by (event_type, occurred_at, event_id).
async fn assert_compacted_and_sorted(env: &TestEnv, prefix: &str) -> Vec<String> {
    let keys = env.keys(prefix).await;
    for key in &keys {
        assert!(plan::is_compacted(key), "micro-batch file left: {key}");
        let rows = rows_of(env.object(key).await);
        assert!(rows.windows(2).all(|w| w[0] <= w[1]), "{key} is not sorted");
    }
    keys
}

async fn marked_inputs(env: &TestEnv, keys: &[String]) -> usize {
    sqlx::query("SELECT count(*) FROM lake_objects WHERE object_key = ANY($1) AND compacted_into IS NOT NULL")
        .bind(keys)
        .fetch_one(env.ledger.pool())
        .await
        .unwrap()
        .get::<i64, _>(0) as usize
}

async fn listing(env: &TestEnv, prefix: &str) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for key in env.keys(prefix).await {
        out.push((key.clone(), env.object(&key).await));
    }
    out
}

/// Invariant: an hour of many micro-batch files becomes one sorted file holding every event
/// exactly once; a duplicate copy of a batch is dropped; every input is marked in `lake_objects`.
#[tokio::test]
async fn many_micro_batches_become_one_sorted_file_with_each_event_once() {
    let env = TestEnv::new().await;
    let start = hour(10);
    let (batches, ids) = hour_batches(start, 40, 50, 1);
    ingest(&pipeline(&env), &batches).await;
    let prefix = prefix(start);
    let inputs = env.keys(&prefix).await;
    assert_eq!(inputs.len(), 40);
    // A second copy of one batch under another name: what a consumer race can leave (see athena/README.md).
    let copy = inputs[3].replace("shardId-000000000000", "shardId-000000000009");
    env.s3.put_object().bucket(&env.bucket).key(&copy).body(env.object(&inputs[3]).await.into()).send().await.unwrap();

    let report = compactor(&env, Limits::default()).compact_partition(&Partition::of(start)).await.unwrap();
    assert_eq!((report.files_before, report.files_after, report.outputs), (41, 1, 1));
    assert_eq!((report.rows_in, report.rows_out, report.duplicates_dropped), (2050, 2000, 50));
    let keys = assert_compacted_and_sorted(&env, &prefix).await;
    assert_exactly_once(&env, &prefix, &ids).await;
    let meta = ParquetRecordBatchReaderBuilder::try_new(env.object(&keys[0]).await).unwrap().metadata().clone();
    assert_eq!(meta.num_row_groups(), 1, "2000 rows fit one row group");
    assert_eq!(marked_inputs(&env, &inputs).await, 40, "every input is marked compacted");
}

/// Invariant: re-running over a compacted hour changes nothing (no writes, same object).
#[tokio::test]
async fn rerun_is_a_noop() {
    let env = TestEnv::new().await;
    let start = hour(11);
    let (batches, ids) = hour_batches(start, 12, 30, 1);
    ingest(&pipeline(&env), &batches).await;
    let c = compactor(&env, Limits::default());
    c.compact_partition(&Partition::of(start)).await.unwrap();
    let prefix = prefix(start);
    let before = listing(&env, &prefix).await;
    let again = c.compact_partition(&Partition::of(start)).await.unwrap();
    assert_eq!((again.outputs, again.inputs_compacted, again.leftovers_deleted), (0, 0, 0));
    assert_eq!(listing(&env, &prefix).await, before);
    assert_exactly_once(&env, &prefix, &ids).await;
}

/// Invariant: a run stopped after any step (output written, marks committed, half the inputs
/// deleted; first or later chunk) loses nothing, and the next run ends with every event exactly
/// once, every input marked, and a redelivered batch adding nothing.
#[tokio::test]
async fn stopping_after_any_step_then_rerunning_ends_exactly_once() {
    let env = TestEnv::new().await;
    let p = pipeline(&env);
    let halts = [
        Halt::AfterWrite { chunk: 0 },
        Halt::AfterCommit { chunk: 0 },
        Halt::MidDelete { chunk: 0 },
        Halt::AfterWrite { chunk: 1 },
        Halt::AfterCommit { chunk: 2 },
        Halt::MidDelete { chunk: 1 },
    ];
    for (i, halt) in halts.into_iter().enumerate() {
        let start = hour(i as u32);
        let (batches, ids) = hour_batches(start, 24, 40, 1);
        ingest(&p, &batches).await;
        let prefix = prefix(start);
        let inputs = env.keys(&prefix).await;
        let total: u64 = env
            .s3
            .list_objects_v2()
            .bucket(&env.bucket)
            .prefix(&prefix)
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .map(|o| o.size().unwrap() as u64)
            .sum();
        // Three chunks, so a stop can fall between chunks as well as inside one.
        let limits = Limits::with_chunk_bytes(total / 3 + 1);
        let c = compactor(&env, limits);

        let stopped = c.compact_partition_halting(&Partition::of(start), Some(halt)).await.unwrap();
        assert!(stopped.halted, "{halt:?} was not reached");
        assert_nothing_lost(&env, &prefix, &ids).await;

        let resumed = c.compact_partition(&Partition::of(start)).await.unwrap();
        assert!(!resumed.halted);
        assert_compacted_and_sorted(&env, &prefix).await;
        assert_exactly_once(&env, &prefix, &ids).await;
        assert_eq!(marked_inputs(&env, &inputs).await, inputs.len(), "{halt:?}: every input marked");

        let noop = c.compact_partition(&Partition::of(start)).await.unwrap();
        assert_eq!(noop.outputs + noop.leftovers_deleted, 0, "{halt:?}: third run did something");
        p.process(&batches[5]).await.unwrap();
        assert_exactly_once(&env, &prefix, &ids).await;
    }
}

fn database_url(env: &TestEnv) -> String {
    let admin = std::env::var("TEST_ADMIN_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (base, query) = admin.split_once('?').map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
    let (server, _) = base.rsplit_once('/').expect("admin URL names a database");
    match query {
        Some(q) => format!("{server}/{}?{q}", env.database),
        None => format!("{server}/{}", env.database),
    }
}

/// Runs the compactor binary on one hour; with `kill_on`, SIGKILLs it as soon as it logs that
/// message. Returns whether it was killed and its log lines.
async fn run_binary(
    env: &TestEnv,
    start: DateTime<Utc>,
    chunk_mb: u32,
    kill_on: Option<&'static str>,
) -> (bool, Vec<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_compactor"));
    cmd.args(["--hour", &start.format("%Y-%m-%dT%H").to_string(), "--chunk-mb", &chunk_mb.to_string()])
        .env("LAKE_BUCKET", &env.bucket)
        .env("DATABASE_URL", database_url(env))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("start the compactor binary");
        let mut lines = Vec::new();
        let mut killed = false;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let hit = kill_on.is_some_and(|m| line.contains(&format!("\"message\":\"{m}\"")));
            lines.push(line);
            if hit {
                child.kill().unwrap(); // SIGKILL: no destructor, no cleanup, no goodbye.
                killed = true;
                break;
            }
        }
        let status = child.wait().unwrap();
        assert!(killed || status.success(), "compactor failed: {status}\n{}", lines.join("\n"));
        (killed, lines)
    })
    .await
    .unwrap()
}

/// Invariant: the compactor binary killed with SIGKILL mid-run (once just after writing an
/// output, once just after committing one) and run again ends with every event exactly once.
#[tokio::test]
async fn sigkilled_compactor_binary_then_rerun_ends_exactly_once() {
    let env = TestEnv::new().await;
    let start = hour(13);
    let (batches, ids) = hour_batches(start, 150, 400, 1);
    ingest(&pipeline(&env), &batches).await;
    let prefix = prefix(start);
    let inputs = env.keys(&prefix).await;
    let total: u64 = {
        let mut sum = 0;
        let mut pages = env.s3.list_objects_v2().bucket(&env.bucket).prefix(&prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            sum += page.unwrap().contents().iter().map(|o| o.size().unwrap() as u64).sum::<u64>();
        }
        sum
    };
    // Chunks of ~1/4 of the hour, so the run has several write/commit/delete rounds to interrupt.
    let chunk_mb = ((total / 4) / (1024 * 1024)).max(1) as u32;

    let (killed, _) = run_binary(&env, start, chunk_mb, Some("chunk written")).await;
    assert!(killed, "the run ended before writing anything");
    let state = assert_nothing_lost(&env, &prefix, &ids).await;
    eprintln!("killed after a write: (micro, compacted, duplicate rows) = {state:?}");
    let (killed, _) = run_binary(&env, start, chunk_mb, Some("chunk committed")).await;
    assert!(killed, "the second run ended before committing anything");
    let state = assert_nothing_lost(&env, &prefix, &ids).await;
    eprintln!("killed after a commit: (micro, compacted, duplicate rows) = {state:?}");

    let (_, log) = run_binary(&env, start, chunk_mb, None).await;
    assert!(log.iter().any(|l| l.contains("compaction run done")), "{log:?}");
    assert_compacted_and_sorted(&env, &prefix).await;
    assert_exactly_once(&env, &prefix, &ids).await;
    assert_eq!(marked_inputs(&env, &inputs).await, inputs.len());
    let before = env.keys(&prefix).await;
    run_binary(&env, start, chunk_mb, None).await;
    assert_eq!(env.keys(&prefix).await, before, "a finished hour is left alone");
}

/// Invariant: a batch redelivered after its hour was compacted — whole or as a bisected half —
/// adds no rows to the lake and no counts to PostgreSQL.
#[tokio::test]
async fn batch_redelivered_after_compaction_adds_no_rows() {
    let env = TestEnv::new().await;
    let start = hour(14);
    let (batches, ids) = hour_batches(start, 10, 40, 1);
    let p = pipeline(&env);
    ingest(&p, &batches).await;
    compactor(&env, Limits::default()).compact_partition(&Partition::of(start)).await.unwrap();
    let prefix = prefix(start);
    let compacted = env.keys(&prefix).await;
    let counts = env.counts().await;

    for b in &batches {
        let report = p.process(b).await.unwrap();
        assert!(report.lake_objects.is_empty(), "redelivery wrote {:?}", report.lake_objects);
        assert_eq!(report.new_events, 0);
    }
    let report = p.process(&batches[2][..15]).await.unwrap();
    assert!(report.lake_objects.is_empty(), "a bisected half wrote {:?}", report.lake_objects);
    p.process(&batches[2][15..]).await.unwrap();

    assert_eq!(env.keys(&prefix).await, compacted);
    assert_exactly_once(&env, &prefix, &ids).await;
    assert_eq!(env.counts().await, counts);
}

/// Invariant: an object a racing consumer retry rewrote after its deletion (its mark says it is
/// compacted) is removed by the next run once its rows are confirmed in the compacted file.
#[tokio::test]
async fn resurrected_micro_batch_object_is_removed_by_the_next_run() {
    let env = TestEnv::new().await;
    let start = hour(15);
    let (batches, ids) = hour_batches(start, 8, 40, 1);
    ingest(&pipeline(&env), &batches).await;
    let prefix = prefix(start);
    let originals = listing(&env, &prefix).await;
    let c = compactor(&env, Limits::default());
    c.compact_partition(&Partition::of(start)).await.unwrap();
    let (key, body) = &originals[4];
    env.s3.put_object().bucket(&env.bucket).key(key).body(body.clone().into()).send().await.unwrap();

    let report = c.compact_partition(&Partition::of(start)).await.unwrap();
    assert_eq!((report.leftovers_deleted, report.outputs), (1, 0));
    assert_compacted_and_sorted(&env, &prefix).await;
    assert_exactly_once(&env, &prefix, &ids).await;
}

/// Invariant: a batch that lands in an hour after it was compacted (a lagging consumer) is
/// merged into the hour's file by the next run, each event once.
#[tokio::test]
async fn straggler_batch_is_merged_into_the_compacted_hour() {
    let env = TestEnv::new().await;
    let start = hour(16);
    let (batches, mut ids) = hour_batches(start, 6, 40, 1);
    let p = pipeline(&env);
    ingest(&p, &batches).await;
    let c = compactor(&env, Limits::default());
    c.compact_partition(&Partition::of(start)).await.unwrap();
    let (late, late_ids) = hour_batches(start, 1, 25, 10_000);
    ingest(&p, &late).await;
    ids.extend(late_ids);
    let prefix = prefix(start);
    assert_eq!(env.keys(&prefix).await.len(), 2);

    let report = c.compact_partition(&Partition::of(start)).await.unwrap();
    assert_eq!((report.files_before, report.files_after), (2, 1));
    assert_compacted_and_sorted(&env, &prefix).await;
    assert_exactly_once(&env, &prefix, &ids).await;
}

/// Invariant: two compactors started on the same hour at once do not both rewrite it (the
/// partition lock), and the hour ends with each event once.
#[tokio::test]
async fn concurrent_compactors_take_turns() {
    let env = TestEnv::new().await;
    let start = hour(17);
    let (batches, ids) = hour_batches(start, 30, 40, 1);
    ingest(&pipeline(&env), &batches).await;
    let (a, b) = (compactor(&env, Limits::default()), compactor(&env, Limits::default()));
    let p = Partition::of(start);
    let (ra, rb) = tokio::join!(a.compact_partition(&p), b.compact_partition(&p));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.outputs + rb.outputs == 1, "exactly one of them compacted: {ra:?} {rb:?}");
    eprintln!("skipped because locked: {} / {}", ra.skipped_locked, rb.skipped_locked);
    let prefix = prefix(start);
    assert_compacted_and_sorted(&env, &prefix).await;
    assert_exactly_once(&env, &prefix, &ids).await;
}

/// Invariant: `compact_hours` only touches closed hours (never the current one) and reports each.
#[tokio::test]
async fn only_closed_hours_are_compacted() {
    let env = TestEnv::new().await;
    let p = pipeline(&env);
    let now = Utc::now();
    let current = Partition::of(now).hour_start();
    let previous = current - Duration::hours(1);
    let (open_batches, _) = hour_batches(current, 3, 10, 1);
    let (closed_batches, closed_ids) = hour_batches(previous, 3, 10, 1000);
    ingest(&p, &open_batches).await;
    ingest(&p, &closed_batches).await;
    // Pretend it is 20 minutes into the next hour, so `previous` is closed and `current` is not.
    let reports = compactor(&env, Limits::default()).compact_hours(current + Duration::minutes(20), 2).await;
    let by_partition: HashMap<String, _> = reports.into_iter().map(|r| (r.partition.clone(), r)).collect();
    assert_eq!(by_partition[&Partition::of(previous).path()].outputs, 1);
    assert!(!by_partition.contains_key(&Partition::of(current).path()));
    assert_eq!(env.keys(&prefix(current)).await.len(), 3, "the open hour was left alone");
    assert_exactly_once(&env, &prefix(previous), &closed_ids).await;
}

/// Times every example query with DuckDB over two local copies of one partition, alternating
/// run by run; (query, median ms before, median ms after, min before, min after).
fn time_queries(
    before: &std::path::Path,
    after: &std::path::Path,
    day: &str,
    repeat: usize,
) -> Vec<(String, [f64; 4])> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let out = Command::new(root.join(".local/venv/bin/python"))
        .arg(root.join("athena/run_queries.py"))
        .args(["--lake", before.to_str().unwrap(), "--against", after.to_str().unwrap()])
        .args(["--bench", &repeat.to_string(), "--params", day, day])
        .output()
        .expect("run athena/run_queries.py (bash scripts/venv.sh installs DuckDB)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines
        .chunks(2)
        .map(|pair| {
            let f = |i: usize, k: &str| pair[i][k].as_f64().unwrap();
            (
                pair[0]["query"].as_str().unwrap().to_owned(),
                [f(0, "median_ms"), f(1, "median_ms"), f(0, "min_ms"), f(1, "min_ms")],
            )
        })
        .collect()
}

async fn download_partition(env: &TestEnv, prefix: &str, dir: &std::path::Path) -> (usize, u64) {
    let (mut files, mut bytes) = (0, 0);
    for key in env.keys(prefix).await {
        let body = env.object(&key).await;
        let path = dir.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &body).unwrap();
        files += 1;
        bytes += body.len() as u64;
    }
    (files, bytes)
}

/// Not a test: the compaction measurement in bench/RESULTS.md ("Compaction"). One hour of
/// BENCH_FILES micro-batch files of BENCH_ROWS events (default 200 × 500) is compacted; prints
/// file counts, bytes, the compaction time and each example query's DuckDB time before and
/// after, all from this one run. Run it with `bash athena/bench_compaction.sh`.
#[tokio::test]
#[ignore = "benchmark; run with athena/bench_compaction.sh"]
async fn bench_compaction() {
    let files: usize = std::env::var("BENCH_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let rows: usize = std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let env = TestEnv::new().await;
    let start = hour(9);
    let (batches, ids) = hour_batches(start, files, rows, 1);
    ingest(&pipeline(&env), &batches).await;
    let prefix = prefix(start);
    let day = start.format("%Y-%m-%d").to_string();
    let scratch = std::env::temp_dir().join(format!("bench-compaction-{}", env.database));
    let (before_dir, after_dir) = (scratch.join("before"), scratch.join("after"));
    let (files_before, bytes_before) = download_partition(&env, &prefix, &before_dir).await;

    // The compactor binary, as deployed, under /usr/bin/time for its peak memory.
    let out = Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kb=%M elapsed_s=%e", env!("CARGO_BIN_EXE_compactor")])
        .args(["--hour", &start.format("%Y-%m-%dT%H").to_string()])
        .env("LAKE_BUCKET", &env.bucket)
        .env("DATABASE_URL", database_url(&env))
        .output()
        .expect("/usr/bin/time (Debian package `time`)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let measured = stderr.lines().rfind(|l| l.starts_with("maxrss_kb=")).unwrap_or_default().to_owned();
    assert_exactly_once(&env, &prefix, &ids).await;
    let (files_after, bytes_after) = download_partition(&env, &prefix, &after_dir).await;
    let row_groups = {
        let key = env.keys(&prefix).await.remove(0);
        ParquetRecordBatchReaderBuilder::try_new(env.object(&key).await).unwrap().metadata().num_row_groups()
    };

    let timings = time_queries(&before_dir, &after_dir, &day, 25);
    let _ = std::fs::remove_dir_all(&scratch);

    let mut table = format!(
        "| | before | after | ratio |\n|---|---:|---:|---:|\n| files | {files_before} | {files_after} | |\n\
         | bytes | {bytes_before} | {bytes_after} | |\n| rows | {} | {} | |\n| row groups per file | 1 | {row_groups} | |\n",
        ids.len(),
        ids.len()
    );
    for (q, [b, a, b_min, a_min]) in timings.iter().filter(|(q, _)| !q.starts_with("08")) {
        table.push_str(&format!(
            "| DuckDB `{q}` (ms, median / min of 25) | {b:.1} / {b_min:.1} | {a:.1} / {a_min:.1} | {:.1}× / {:.1}× |\n",
            b / a,
            b_min / a_min
        ));
    }
    eprintln!(
        "\n{files} micro-batch files × {rows} rows, one hour; compactor binary (debug build, local moto S3): {measured}\n\n{table}"
    );
}
