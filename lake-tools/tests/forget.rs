//! Forget against the local stack (moto S3, dynalite, PostgreSQL): a visitor's items and lake rows
//! go — only theirs, in micro-batch and compacted objects alike — whatever point a run stops at,
//! and running again removes nothing more. Each test names the invariant it guards.

#[path = "../../stream-consumer/tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use chrono::{DateTime, Duration, Utc};
use lake_tools::compact::plan::{self, Limits};
use lake_tools::compact::store::{LakeFiles, lock_partition};
use lake_tools::compact::{Compactor, Halt};
use lake_tools::forget::{Forgetter, RunReport};
use lake_tools::items::EventItems;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use schemas::lake::Partition;
use schemas::visitors::IdKind;
use service_kit::postgres::Database;
use sqlx::Row;
use stream_consumer::decode::InputRecord;
use stream_consumer::testing::{record_of, sample_event, seq};
use support::TestEnv;

const SITE: &str = "local-demo";
/// The visitors erased: one by anonymous ID, one by user ID.
const GONE_ANONYMOUS: &str = "visitor-to-forget";
const GONE_USER: &str = "user-to-forget";

fn hour(h: u32) -> DateTime<Utc> {
    format!("2024-06-01T{h:02}:00:00Z").parse().unwrap()
}

/// One lake row as the tests compare them: (event ID, site, anonymous ID, user ID).
type Row4 = (String, Option<String>, Option<String>, Option<String>);

/// Who sent event `i`: every 7th the anonymous visitor to forget, every 11th the user to forget,
/// every 13th the same anonymous ID on another site (a different visitor, who stays), the rest
/// one of 50 others.
fn visitor_of(i: usize) -> (Option<&'static str>, String, Option<String>) {
    if i.is_multiple_of(7) {
        (Some(SITE), GONE_ANONYMOUS.into(), None)
    } else if i.is_multiple_of(11) {
        (Some(SITE), format!("anon-{}", i % 50), Some(GONE_USER.into()))
    } else if i.is_multiple_of(13) {
        (Some("other-site"), GONE_ANONYMOUS.into(), None)
    } else {
        (Some(SITE), format!("anon-{}", i % 50), None)
    }
}

fn is_gone(row: &Row4) -> bool {
    row.1.as_deref() == Some(SITE) && (row.2.as_deref() == Some(GONE_ANONYMOUS) || row.3.as_deref() == Some(GONE_USER))
}

/// The visitor of event `i`: (site, anonymous ID, user ID).
type Who = fn(usize) -> (Option<&'static str>, String, Option<String>);

/// `files` batches of `rows` events received during `start`'s hour, sequence numbers from
/// `first_seq`, sent by `who`; returns them with every row sent.
fn batches_of(
    start: DateTime<Utc>,
    files: usize,
    rows: usize,
    first_seq: usize,
    who: Who,
) -> (Vec<Vec<InputRecord>>, Vec<Row4>) {
    let mut sent = Vec::new();
    let total = files * rows;
    let batches = (0..files)
        .map(|f| {
            (0..rows)
                .map(|r| {
                    let i = first_seq + f * rows + r;
                    let received = start + Duration::milliseconds(((f * rows + r) as i64) * 3_599_000 / total as i64);
                    let mut event = sample_event(["page_view", "click"][i % 2], None, received);
                    let (site, anonymous, user) = who(i);
                    event.site = site.map(Into::into);
                    event.anonymous_id = Some(anonymous.clone().into());
                    event.user_id = user.clone().map(Into::into);
                    sent.push((event.event_id.to_string(), site.map(str::to_owned), Some(anonymous), user));
                    record_of(&seq(i), &event)
                })
                .collect()
        })
        .collect();
    (batches, sent)
}

fn batches(start: DateTime<Utc>, files: usize, rows: usize, first_seq: usize) -> (Vec<Vec<InputRecord>>, Vec<Row4>) {
    batches_of(start, files, rows, first_seq, visitor_of)
}

/// Forget with a pool of its own, as its binary has (a test may hold a connection of the
/// consumer's pool for a lock).
fn forgetter(env: &TestEnv) -> Forgetter {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect_lazy(&support::database_url(&env.database))
        .expect("forget pool");
    Forgetter::new(
        LakeFiles::new(env.s3.clone(), env.bucket.clone()),
        EventItems::new(env.dynamo.clone(), env.table.clone()),
        Database::from_pool(pool),
    )
}

fn compactor(env: &TestEnv) -> Compactor {
    Compactor::new(
        LakeFiles::new(env.s3.clone(), env.bucket.clone()),
        Database::from_pool(env.ledger.pool().clone()),
        Limits::default(),
    )
}

/// Every lake row, with repeats, from every object under `events/`.
async fn lake_rows(env: &TestEnv) -> Vec<Row4> {
    let mut rows = Vec::new();
    for key in env.keys("events/").await {
        let reader = ParquetRecordBatchReaderBuilder::try_new(env.object(&key).await).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = |name: &str| batch.column_by_name(name).unwrap().as_string::<i32>().clone();
            let (ids, sites, anonymous, users) = (col("event_id"), col("site"), col("anonymous_id"), col("user_id"));
            let opt = |a: &arrow_array::StringArray, r: usize| a.is_valid(r).then(|| a.value(r).to_owned());
            for r in 0..batch.num_rows() {
                rows.push((ids.value(r).to_owned(), opt(&sites, r), opt(&anonymous, r), opt(&users, r)));
            }
        }
    }
    rows
}

async fn dynamo_ids(env: &TestEnv) -> HashSet<String> {
    let items = service_kit::dynamo::scan_all(&env.dynamo, &env.table, "event_id").await.unwrap();
    items.iter().map(|i| i["event_id"].as_s().unwrap().clone()).collect()
}

fn ids(rows: &[Row4]) -> HashSet<String> {
    rows.iter().map(|r| r.0.clone()).collect()
}

/// The lake and DynamoDB hold exactly the events of the visitors who stay, each lake row once.
async fn assert_only_the_others_remain(env: &TestEnv, sent: &[Row4]) {
    let kept: Vec<Row4> = sent.iter().filter(|r| !is_gone(r)).cloned().collect();
    let rows = lake_rows(env).await;
    assert!(!rows.iter().any(is_gone), "a forgotten visitor's row is still in the lake");
    assert_eq!(rows.len(), ids(&rows).len(), "duplicate lake rows");
    assert_eq!(ids(&rows), ids(&kept), "the lake holds exactly the others' events");
    assert_eq!(dynamo_ids(env).await, ids(&kept), "DynamoDB holds exactly the others' items");
}

async fn request_both(f: &Forgetter) -> Vec<i64> {
    let (a, new_a) = f.request(SITE, IdKind::Anonymous, GONE_ANONYMOUS).await.unwrap();
    let (u, new_u) = f.request(SITE, IdKind::User, GONE_USER).await.unwrap();
    assert!(new_a && new_u);
    vec![a, u]
}

/// (visitor raw ID, dynamo items, lake rows, lake objects, completed) per request, by ID.
async fn audit(env: &TestEnv) -> HashMap<i64, (Option<String>, i64, i64, i64, bool)> {
    sqlx::query(
        "SELECT id, visitor, dynamo_items_removed, lake_rows_removed, lake_objects_rewritten, completed_at IS NOT NULL
         FROM erasure_requests",
    )
    .fetch_all(env.ledger.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))))
    .collect()
}

/// Ingests two hours — the first compacted into one file, the second left as micro-batches —
/// and returns every row sent.
async fn two_hours(env: &TestEnv, first: u32) -> Vec<Row4> {
    let p = env.pipeline();
    let (compacted, mut sent) = batches(hour(first), 8, 25, 1);
    let (micro, more) = batches(hour(first + 1), 6, 25, 1_000);
    sent.extend(more);
    for b in compacted.iter().chain(&micro) {
        p.process(b).await.unwrap();
    }
    let report = compactor(env).compact_partition(&Partition::of(hour(first))).await.unwrap();
    assert_eq!(report.outputs, 1);
    sent
}

/// Invariant: a run removes exactly the requested visitors' items and lake rows — from compacted
/// and micro-batch objects, on their site only — reads only objects its filters point at, keeps
/// an audit without the raw IDs, and a second run (or a repeated request) removes nothing more.
#[tokio::test]
async fn forgets_the_visitors_everywhere_and_only_them() {
    let env = TestEnv::new().await;
    let sent = two_hours(&env, 1).await;
    let objects = env.keys("events/").await.len();
    let gone: Vec<&Row4> = sent.iter().filter(|r| is_gone(r)).collect();
    let f = forgetter(&env);
    let requests = request_both(&f).await;

    let report = f.run().await.unwrap();
    assert_eq!(report.requests, 2);
    assert_eq!(report.completed, requests);
    assert_eq!(report.dynamo_items_removed, gone.len() as u64);
    assert_eq!(report.lake_rows_removed, gone.len() as u64);
    // Every object holds a forgotten visitor's row here (every 7th event), so all are read and
    // rewritten; what filters save is shown by the next test.
    assert_eq!((report.objects_read, report.lake_objects_rewritten as usize), (objects, objects));
    assert_only_the_others_remain(&env, &sent).await;

    let audit = audit(&env).await;
    let by_anonymous =
        sent.iter().filter(|r| r.1.as_deref() == Some(SITE) && r.2.as_deref() == Some(GONE_ANONYMOUS)).count();
    let by_user = sent.iter().filter(|r| r.3.as_deref() == Some(GONE_USER)).count();
    let (raw, items, rows, _, done) = &audit[&requests[0]];
    assert_eq!((raw, *items, *rows, *done), (&None, by_anonymous as i64, by_anonymous as i64, true));
    let (raw, items, rows, _, done) = &audit[&requests[1]];
    assert_eq!((raw, *items, *rows, *done), (&None, by_user as i64, by_user as i64, true));
    let hashes: Vec<String> = sqlx::query_scalar("SELECT visitor_sha256 FROM erasure_requests ORDER BY id")
        .fetch_all(env.ledger.pool())
        .await
        .unwrap();
    assert_eq!(hashes[0], lake_tools::forget::plan::audit_hash(IdKind::Anonymous, SITE, GONE_ANONYMOUS));

    // Idempotent: nothing pending, nothing removed; a repeated request completes with zeros.
    let lake_before = env.keys("events/").await;
    let again = f.run().await.unwrap();
    assert_eq!((again.requests, again.lake_rows_removed, again.objects_read), (0, 0, 0));
    let (repeat, new) = f.request(SITE, IdKind::Anonymous, GONE_ANONYMOUS).await.unwrap();
    assert!(new, "the earlier request completed: this is a new one");
    let report = f.run().await.unwrap();
    assert_eq!(report.completed, [repeat]);
    assert_eq!((report.dynamo_items_removed, report.lake_rows_removed, report.lake_objects_rewritten), (0, 0, 0));
    assert_eq!(env.keys("events/").await, lake_before, "nothing rewritten");
    assert_only_the_others_remain(&env, &sent).await;

    // The compactor after forget merges the second hour without bringing anything back.
    compactor(&env).compact_partition(&Partition::of(hour(2))).await.unwrap();
    assert_only_the_others_remain(&env, &sent).await;
}

/// Invariant: the visitor filters keep a run from reading objects that cannot hold the
/// visitor; an object without a filter (written before filters) is read, and gets one.
#[tokio::test]
async fn filters_spare_objects_without_the_visitor_and_unfiltered_objects_are_read() {
    let env = TestEnv::new().await;
    let p = env.pipeline();
    // Twelve batches of 20; the visitor sends four events of the fourth (sequence 61–80).
    let who: Who = |i| {
        let anonymous = if (61..=64).contains(&i) { GONE_ANONYMOUS } else { "someone-else" };
        (Some(SITE), anonymous.into(), None)
    };
    let (all, sent) = batches_of(hour(5), 12, 20, 1, who);
    for b in &all {
        p.process(b).await.unwrap();
    }
    assert!(sent.iter().any(is_gone));
    // Two objects lose their filter, as if written before migration 0011.
    let keys = env.keys("events/").await;
    sqlx::query("DELETE FROM lake_object_visitors WHERE object_key = ANY($1)")
        .bind(&keys[5..7])
        .execute(env.ledger.pool())
        .await
        .unwrap();
    let f = forgetter(&env);
    f.request(SITE, IdKind::Anonymous, GONE_ANONYMOUS).await.unwrap();
    let report = f.run().await.unwrap();
    // The visitor's object and the two unfiltered ones; a false positive of the others' filters
    // (under 1 % each) would add one.
    assert!((3..=4).contains(&report.objects_read), "read {} objects of 12", report.objects_read);
    assert_eq!((report.lake_objects_rewritten, report.objects_indexed), (1, 2));
    assert_only_the_others_remain(&env, &sent).await;
    let filtered: i64 = sqlx::query_scalar("SELECT count(*) FROM lake_object_visitors WHERE object_key = ANY($1)")
        .bind(env.keys("events/").await)
        .fetch_one(env.ledger.pool())
        .await
        .unwrap();
    assert_eq!(filtered, 12, "every object has a filter now");
}

/// Invariant: a run stopped after any step (rewritten objects written, swap committed, half the
/// old objects deleted; first or second partition) loses no other visitor's row and leaves each
/// object's old rows or new rows visible; a compactor run meanwhile brings nothing back; and the
/// next forget run ends exact, with the audit counting each row once.
#[tokio::test]
async fn stopping_after_any_step_then_rerunning_ends_exact() {
    let halts = [
        Halt::AfterWrite { chunk: 0 },
        Halt::AfterCommit { chunk: 0 },
        Halt::MidDelete { chunk: 0 },
        Halt::AfterWrite { chunk: 1 },
        Halt::MidDelete { chunk: 1 },
    ];
    for halt in halts {
        let env = TestEnv::new().await;
        let sent = two_hours(&env, 10).await;
        let gone = sent.iter().filter(|r| is_gone(r)).count() as i64;
        let others = ids(&sent.iter().filter(|r| !is_gone(r)).cloned().collect::<Vec<_>>());
        let f = forgetter(&env);
        let requests = request_both(&f).await;
        let stopped: RunReport = f.run_halting(Some(halt)).await.unwrap();
        assert!(stopped.halted, "{halt:?}");
        let visible = ids(&lake_rows(&env).await);
        assert!(others.is_subset(&visible), "{halt:?}: another visitor's row went missing");
        assert!(audit(&env).await.values().all(|a| !a.4), "{halt:?}: nothing completes in a stopped run");

        // The compactor, scheduled meanwhile, must not merge erased rows back.
        for h in [10, 11] {
            compactor(&env).compact_partition(&Partition::of(hour(h))).await.unwrap();
        }
        let report = f.run().await.unwrap();
        assert_eq!(report.completed, requests, "{halt:?}");
        assert_only_the_others_remain(&env, &sent).await;
        let audit = audit(&env).await;
        let removed: i64 = requests.iter().map(|r| audit[r].1).sum();
        assert_eq!(removed, gone, "{halt:?}: DynamoDB counts");
        let rows: i64 = requests.iter().map(|r| audit[r].2).sum();
        // A row of both visitors (none here: the two never share an event) would count twice.
        assert_eq!(rows, gone, "{halt:?}: each erased lake row counted once");
        let unfinished: i64 = sqlx::query_scalar("SELECT count(*) FROM lake_erasures WHERE deleted_at IS NULL")
            .fetch_one(env.ledger.pool())
            .await
            .unwrap();
        assert_eq!(unfinished, 0, "{halt:?}");
    }
}

/// Invariant: a partition a compactor holds is left for the next run, and the requests stay
/// pending (with their raw IDs) until every partition is done.
#[tokio::test]
async fn a_partition_held_by_the_compactor_keeps_the_requests_pending() {
    let env = TestEnv::new().await;
    let sent = two_hours(&env, 20).await;
    let f = forgetter(&env);
    let requests = request_both(&f).await;
    let held = lock_partition(env.ledger.pool(), &Partition::of(hour(21))).await.unwrap().expect("lock");
    let report = f.run().await.unwrap();
    assert_eq!(report.partitions_skipped, [plan::partition_prefix(&Partition::of(hour(21)))]);
    assert!(report.completed.is_empty());
    let audit_now = audit(&env).await;
    assert!(requests.iter().all(|r| audit_now[r].0.is_some() && !audit_now[r].4), "pending, raw ID kept");
    drop(held);
    let report = f.run().await.unwrap();
    assert_eq!(report.completed, requests);
    assert_only_the_others_remain(&env, &sent).await;
}

/// Invariant: a batch redelivered after its rows were erased writes none of them to the lake.
#[tokio::test]
async fn a_redelivered_batch_does_not_bring_erased_rows_back() {
    let env = TestEnv::new().await;
    let p = env.pipeline();
    let (batches, sent) = batches(hour(6), 3, 30, 1);
    for b in &batches {
        p.process(b).await.unwrap();
    }
    let f = forgetter(&env);
    request_both(&f).await;
    f.run().await.unwrap();
    for b in &batches {
        p.process(b).await.unwrap();
    }
    let rows = lake_rows(&env).await;
    assert!(!rows.iter().any(is_gone), "a redelivery wrote erased rows again");
    assert_eq!(rows.len(), ids(&rows).len(), "duplicate lake rows");
    assert_eq!(ids(&rows), ids(&sent.iter().filter(|r| !is_gone(r)).cloned().collect::<Vec<_>>()));
}
