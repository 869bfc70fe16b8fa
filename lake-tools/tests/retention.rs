//! Retention against the local stack (moto S3, dynalite, PostgreSQL): what is older than its
//! store's retention goes — lake and dead-letter hours with their visitor-index rows, expired
//! DynamoDB items, old erasure audit rows — what is younger stays, an hour a compactor holds is
//! left for the next run, and a run after everything is gone deletes nothing.

#[path = "../../stream-consumer/tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use lake_tools::compact;
use lake_tools::items::EventItems;
use lake_tools::retention::plan::Retention;
use lake_tools::retention::store::LakePrefixes;
use lake_tools::retention::{RetentionReport, RetentionRun};
use schemas::lake::{Partition, fnv1a64};
use service_kit::postgres::Database;
use sqlx::Row;
use support::TestEnv;

const RETENTION: Retention =
    Retention { lake_days: 30, dead_letter_days: 7, erasure_audit_days: 365, dedup_window_hours: 24 };

fn prefix(root: &str, at: DateTime<Utc>) -> String {
    format!("{root}/{}/", Partition::of(at).path())
}

fn run(env: &TestEnv) -> RetentionRun {
    RetentionRun {
        lake: LakePrefixes::new(env.s3.clone(), env.bucket.clone()),
        items: Some(EventItems::new(env.dynamo.clone(), env.table.clone())),
        db: Database::from_pool(env.ledger.pool().clone()),
        retention: RETENTION,
    }
}

/// Writes `key` (retention never reads an object, so any bytes do) and, for event files, its
/// visitor-index row as the consumer would.
async fn object(env: &TestEnv, key: &str) {
    env.s3.put_object().bucket(&env.bucket).key(key).body(Bytes::from_static(b"x").into()).send().await.unwrap();
    if key.starts_with("events/") && key.ends_with(".parquet") {
        index_row(env, key).await;
    }
}

async fn index_row(env: &TestEnv, key: &str) {
    sqlx::query("INSERT INTO lake_object_visitors (id, object_key, visitors) VALUES ($1, $2, '\\x00')")
        .bind(fnv1a64(&[key]))
        .bind(key)
        .execute(env.ledger.pool())
        .await
        .unwrap();
}

async fn index_keys(env: &TestEnv) -> BTreeSet<String> {
    let rows = sqlx::query("SELECT object_key FROM lake_object_visitors").fetch_all(env.ledger.pool()).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

async fn item(env: &TestEnv, id: &str, expires_at: Option<DateTime<Utc>>) {
    let mut put = env.dynamo.put_item().table_name(&env.table).item("event_id", AttributeValue::S(id.into()));
    if let Some(at) = expires_at {
        put = put.item("expires_at", AttributeValue::N(at.timestamp().to_string()));
    }
    put.send().await.unwrap();
}

async fn item_ids(env: &TestEnv) -> BTreeSet<String> {
    let items = service_kit::dynamo::scan_all(&env.dynamo, &env.table, "event_id").await.unwrap();
    items.iter().filter_map(|i| i.get("event_id").and_then(|v| v.as_s().ok()).cloned()).collect()
}

/// An erasure request with its audit row: completed at `completed` (pending when `None`).
async fn erasure(env: &TestEnv, name: &str, requested: DateTime<Utc>, completed: Option<DateTime<Utc>>) {
    sqlx::query(
        "INSERT INTO erasure_requests (site, id_kind, visitor, visitor_sha256, requested_at, completed_at)
         VALUES ('s', 'anonymous_id', $1, $2, $3, $4)",
    )
    .bind(completed.is_none().then_some(name))
    .bind(name)
    .bind(requested)
    .bind(completed)
    .execute(env.ledger.pool())
    .await
    .unwrap();
}

async fn erasure_names(env: &TestEnv) -> BTreeSet<String> {
    let rows = sqlx::query("SELECT visitor_sha256 FROM erasure_requests").fetch_all(env.ledger.pool()).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// Invariant: each store keeps exactly what is younger than its retention; what a compactor
/// holds waits for the next run; a run with nothing expired deletes nothing.
#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "test code: one scenario — every store's fixtures, three runs, what each left"
)]
async fn expired_data_goes_from_every_store_and_young_data_stays() {
    let env = TestEnv::new().await;
    let now = Utc::now();
    let days = |n: i64| now - Duration::days(n);

    // Lake: two expired hours, one expired hour a compactor will hold, and two young ones — the
    // youngest is the hour the cutoff falls in, half of it younger than 30 days.
    let (old_a, old_b, locked) = (prefix("events", days(31)), prefix("events", days(40)), prefix("events", days(50)));
    let (young, boundary) = (prefix("events", days(29)), prefix("events", days(30)));
    let mut kept_events = Vec::new();
    for p in [&old_a, &old_b, &locked, &young, &boundary] {
        for name in ["shardId-000000000000-1-2.parquet", "compacted-00000000000000ab.parquet"] {
            object(&env, &format!("{p}{name}")).await;
        }
    }
    object(&env, &format!("{old_a}_SUCCESS")).await; // not ours, but inside an expired hour: it goes too
    for p in [&young, &boundary] {
        for name in ["shardId-000000000000-1-2.parquet", "compacted-00000000000000ab.parquet"] {
            kept_events.push(format!("{p}{name}"));
        }
    }
    // An index row whose object is already gone (as an S3 lifecycle rule leaves them) goes too.
    let orphan = format!("{}shardId-000000000000-9-9.parquet", prefix("events", days(60)));
    index_row(&env, &orphan).await;
    // A stray object beside the partitions is not a partition and is never touched.
    object(&env, "events/README.txt").await;
    // Dead-letter keeps 7 days.
    let (dl_old, dl_young) = (prefix("dead-letter", days(8)), prefix("dead-letter", days(6)));
    object(&env, &format!("{dl_old}shardId-000000000000-1-2.ndjson")).await;
    object(&env, &format!("{dl_young}shardId-000000000000-3-4.ndjson")).await;

    // DynamoDB: 30 expired (more than one BatchWriteItem), 5 alive, one without a TTL.
    for i in 0..30 {
        item(&env, &format!("expired-{i:02}"), Some(now - Duration::hours(1))).await;
    }
    for i in 0..5 {
        item(&env, &format!("alive-{i}"), Some(now + Duration::days(1))).await;
    }
    item(&env, "no-ttl", None).await;

    // Erasure audit: keep a year of completed requests; pending ones stay whatever their age.
    erasure(&env, "done-long-ago", days(500), Some(days(400))).await;
    erasure(&env, "done-recently", days(20), Some(days(10))).await;
    erasure(&env, "pending-old", days(500), None).await;

    let lock = compact::store::lock_partition(env.ledger.pool(), &Partition::of(days(50))).await.unwrap();
    assert!(lock.is_some(), "the test holds the locked hour as a compactor would");
    let first = run(&env).run(now).await;
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    assert_eq!(
        (first.lake_partitions, first.lake_objects, first.lake_index_rows),
        (2, 5, 5),
        "two expired hours: four data files and a _SUCCESS; their four index rows and the orphan"
    );
    assert_eq!(first.lake_partitions_locked, [Partition::of(days(50)).path()]);
    assert_eq!((first.dead_letter_partitions, first.dead_letter_objects), (1, 1));
    assert_eq!(first.dynamo_items, 30);
    assert_eq!(first.erasure_audit_rows, 1);

    let mut want_events: BTreeSet<String> = kept_events.iter().cloned().collect();
    want_events.insert("events/README.txt".into());
    for name in ["shardId-000000000000-1-2.parquet", "compacted-00000000000000ab.parquet"] {
        want_events.insert(format!("{locked}{name}"));
    }
    assert_eq!(env.keys("events/").await.into_iter().collect::<BTreeSet<_>>(), want_events);
    assert_eq!(env.keys("dead-letter/").await, [format!("{dl_young}shardId-000000000000-3-4.ndjson")]);
    let mut want_index: BTreeSet<String> = want_events.iter().filter(|k| k.ends_with(".parquet")).cloned().collect();
    assert_eq!(index_keys(&env).await, want_index, "index rows of deleted objects go with them, others stay");
    let alive: BTreeSet<String> =
        (0..5).map(|i| format!("alive-{i}")).chain(std::iter::once("no-ttl".to_owned())).collect();
    assert_eq!(item_ids(&env).await, alive);
    assert_eq!(
        erasure_names(&env).await,
        ["done-recently", "pending-old"].map(String::from).into_iter().collect::<BTreeSet<_>>()
    );

    // The compactor lets go: the next run takes that hour, and only that.
    drop(lock);
    let second = run(&env).run(now).await;
    assert!(second.errors.is_empty(), "{:?}", second.errors);
    assert_eq!((second.lake_partitions, second.lake_objects, second.lake_index_rows), (1, 2, 2));
    assert!(second.lake_partitions_locked.is_empty());
    assert_eq!((second.dead_letter_objects, second.dynamo_items, second.erasure_audit_rows), (0, 0, 0));
    for name in ["shardId-000000000000-1-2.parquet", "compacted-00000000000000ab.parquet"] {
        want_events.remove(&format!("{locked}{name}"));
        want_index.remove(&format!("{locked}{name}"));
    }
    assert_eq!(env.keys("events/").await.into_iter().collect::<BTreeSet<_>>(), want_events);
    assert_eq!(index_keys(&env).await, want_index);

    // Idempotent: nothing is left to delete.
    let third = run(&env).run(now).await;
    assert_eq!(third, RetentionReport { ledger_claims: third.ledger_claims, ..RetentionReport::default() });
    assert_eq!(env.keys("events/").await.into_iter().collect::<BTreeSet<_>>(), want_events);
    assert_eq!(item_ids(&env).await, alive);
}

/// Invariant: 0 days keeps a store forever.
#[tokio::test]
async fn zero_days_keeps_everything() {
    let env = TestEnv::new().await;
    let now = Utc::now();
    let old = format!("{}shardId-000000000000-1-2.parquet", prefix("events", now - Duration::days(4000)));
    let old_dl = format!("{}shardId-000000000000-1-2.ndjson", prefix("dead-letter", now - Duration::days(4000)));
    object(&env, &old).await;
    object(&env, &old_dl).await;
    erasure(&env, "ancient", now - Duration::days(4000), Some(now - Duration::days(4000))).await;
    let mut r = run(&env);
    r.retention = Retention { lake_days: 0, dead_letter_days: 0, erasure_audit_days: 0, ..RETENTION };
    r.items = None;
    let report = r.run(now).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.lake_objects, report.dead_letter_objects, report.erasure_audit_rows), (0, 0, 0));
    assert_eq!(env.keys("events/").await, [old]);
    assert_eq!(env.keys("dead-letter/").await, [old_dl]);
    assert_eq!(index_keys(&env).await.len(), 1);
    assert_eq!(erasure_names(&env).await.len(), 1);
}
