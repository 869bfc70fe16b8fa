//! Integration tests against the local stack (moto S3, dynalite, PostgreSQL): the exactly-once
//! invariants of the batch handler. Each test names the invariant it guards.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Utc;
use stream_consumer::decode::InputRecord;
use stream_consumer::sinks::dynamo::{CallFailure, DynamoItems, Item, ItemStore};
use stream_consumer::testing::{raw_record, record_of, sample_event, seq};
use support::TestEnv;
use uuid::Uuid;

fn batch(from: usize, n: usize, types: &[&str]) -> Vec<InputRecord> {
    let now = Utc::now();
    (from..from + n).map(|i| record_of(&seq(i), &sample_event(types[i % types.len()], None, now))).collect()
}

fn unique(ids: &[String]) -> usize {
    ids.iter().collect::<HashSet<_>>().len()
}

/// Invariant: a batch lands in all three stores, each event exactly once.
#[tokio::test]
async fn batch_lands_in_all_three_stores_exactly() {
    let env = TestEnv::new().await;
    let records = batch(1, 300, &["page_view", "click", "purchase"]);
    let report = env.pipeline().process(&records).await.unwrap();
    assert_eq!(report.new_events, 300);
    let ids = env.lake_event_ids().await;
    assert_eq!(ids.len(), 300);
    assert_eq!(unique(&ids), 300);
    assert_eq!(env.dynamo_count().await, 300);
    let counts = env.counts().await;
    assert_eq!(counts["page_view"], 100);
    assert_eq!(counts["click"], 100);
    assert_eq!(counts["purchase"], 100);
    assert_eq!(env.hourly_total().await, 300);
    let keys = env.keys("events/").await;
    assert!(keys[0].starts_with("events/dt="), "{keys:?}");
    assert!(keys[0].ends_with(&format!("shardId-000000000000-{}-{}.parquet", seq(1), seq(300))), "{keys:?}");
}

/// Invariant: the producer's `site` reaches the lake column, the DynamoDB item and the
/// aggregate key; records from before sites (no `site`) are stored with none (null, no
/// attribute, site '').
#[tokio::test]
async fn site_reaches_all_three_stores() {
    let env = TestEnv::new().await;
    let now = Utc::now();
    let records: Vec<InputRecord> = (1..=6)
        .map(|i| {
            let mut e = sample_event("page_view", None, now);
            e.site = (i <= 4).then(|| "local-demo".into());
            record_of(&seq(i), &e)
        })
        .collect();
    assert_eq!(env.pipeline().process(&records).await.unwrap().new_events, 6);
    let count = |v: &[Option<String>], want: Option<&str>| v.iter().filter(|s| s.as_deref() == want).count();
    let lake = env.lake_sites().await;
    assert_eq!((count(&lake, Some("local-demo")), count(&lake, None)), (4, 2), "lake: {lake:?}");
    let items = env.dynamo_sites().await;
    assert_eq!((count(&items, Some("local-demo")), count(&items, None)), (4, 2), "dynamodb: {items:?}");
    assert_eq!(
        env.site_counts().await,
        [("".into(), "page_view".into(), 2), ("local-demo".into(), "page_view".into(), 4)]
    );
    assert_eq!(env.counts().await["page_view"], 6, "counts per type sum the sites");
}

/// Invariant (#23): the producer's `country` reaches the lake's last column, the DynamoDB item
/// and the per-site, per-day country aggregate (events and visitors, '' for none); records
/// without one are stored with none; a redelivery and a rollup change no count.
#[tokio::test]
async fn country_reaches_all_three_stores() {
    let env = TestEnv::new().await;
    let now = Utc::now();
    let records: Vec<InputRecord> = (1..=6)
        .map(|i| {
            let mut e = sample_event("page_view", None, now);
            e.site = Some("local-demo".into());
            e.country = [Some("DE"), Some("DE"), Some("NZ"), None, Some("DE"), None][i - 1].map(Into::into);
            e.anonymous_id = Some(format!("visitor-{}", i % 3).into());
            record_of(&seq(i), &e)
        })
        .collect();
    assert_eq!(env.pipeline().process(&records).await.unwrap().new_events, 6);
    let count = |v: &[Option<String>], want: Option<&str>| v.iter().filter(|s| s.as_deref() == want).count();
    let lake = env.lake_text_column("country").await;
    assert_eq!((count(&lake, Some("DE")), count(&lake, Some("NZ")), count(&lake, None)), (3, 1, 2), "lake: {lake:?}");
    let items = env.dynamo_text_attribute("country").await;
    assert_eq!(
        (count(&items, Some("DE")), count(&items, Some("NZ")), count(&items, None)),
        (3, 1, 2),
        "dynamodb: {items:?}"
    );
    // sample_event's events occurred 1.5 s before they were received.
    let day = (now - chrono::Duration::milliseconds(1500)).date_naive();
    // Visitors: DE has events 1, 2, 5 (visitor-1, visitor-2, visitor-2), NZ event 3
    // (visitor-0), none events 4 and 6 (visitor-1, visitor-0).
    let want = vec![
        ("local-demo".to_owned(), day, "".to_owned(), 2, 2),
        ("local-demo".to_owned(), day, "DE".to_owned(), 3, 2),
        ("local-demo".to_owned(), day, "NZ".to_owned(), 1, 1),
    ];
    assert_eq!(env.site_country_stats().await, want);
    assert_eq!(env.pipeline().process(&records).await.unwrap().new_events, 0);
    let pool = env.ledger.pool();
    let _: i64 = sqlx::query_scalar("SELECT aggregates_rollup()").fetch_one(pool).await.unwrap();
    let rows = |table: &'static str| {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
    };
    assert_eq!(
        rows("site_daily_countries_delta").fetch_one(pool).await.unwrap(),
        0,
        "the rollup moved every delta row"
    );
    assert_eq!(rows("site_daily_countries_rollup").fetch_one(pool).await.unwrap(), 3);
    assert_eq!(env.site_country_stats().await, want, "after a redelivery and a rollup");
}

/// Invariant: the same batch delivered again changes nothing in any store.
#[tokio::test]
async fn same_batch_delivered_twice_changes_nothing() {
    let env = TestEnv::new().await;
    let records = batch(1, 50, &["a", "b"]);
    let p = env.pipeline();
    p.process(&records).await.unwrap();
    let keys_before = env.keys("").await;
    let again = p.process(&records).await.unwrap();
    assert_eq!(again.new_events, 0);
    assert_eq!(env.keys("").await, keys_before, "retry overwrote the same objects");
    assert_eq!(env.lake_event_ids().await.len(), 50);
    assert_eq!(env.dynamo_count().await, 50);
    assert_eq!(env.counts().await.values().sum::<i64>(), 50);
    assert_eq!(env.hourly_total().await, 50);
}

/// Invariant: an event_id re-sent by a client and arriving in a later batch is stored once.
#[tokio::test]
async fn event_id_resent_in_later_batch_is_stored_once() {
    let env = TestEnv::new().await;
    let p = env.pipeline();
    let id = Uuid::new_v4();
    let now = Utc::now();
    let first = vec![
        record_of(&seq(1), &sample_event("signup", Some(id), now)),
        record_of(&seq(2), &sample_event("a", None, now)),
    ];
    p.process(&first).await.unwrap();
    let later = vec![
        record_of(&seq(3), &sample_event("signup", Some(id), now)),
        record_of(&seq(4), &sample_event("a", None, now)),
    ];
    let report = p.process(&later).await.unwrap();
    assert_eq!(report.duplicates_in_window, 1);
    assert_eq!(report.new_events, 1);
    let ids = env.lake_event_ids().await;
    assert_eq!(ids.len(), 3);
    assert_eq!(ids.iter().filter(|i| **i == id.to_string()).count(), 1);
    assert_eq!(env.dynamo_count().await, 3);
    assert_eq!(env.counts().await["signup"], 1);
}

/// Fails every BatchWriteItem call after the first `ok_calls`, until `heal()` is called.
struct FailAfter {
    inner: DynamoItems,
    ok_calls: usize,
    calls: AtomicUsize,
    healed: std::sync::atomic::AtomicBool,
}

impl ItemStore for FailAfter {
    async fn write_batch(&self, items: Vec<Item>) -> Result<Vec<Item>, CallFailure> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n >= self.ok_calls && !self.healed.load(Ordering::SeqCst) {
            // Fail slowly, as a timing-out call would, so the calls before it complete.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            return Err(CallFailure { retryable: false, message: "injected failure".into() });
        }
        self.inner.write_batch(items).await
    }
}

/// Invariant: a batch whose DynamoDB write fails midway, then is retried, ends exact everywhere.
#[tokio::test]
async fn dynamo_failure_midway_then_retry_ends_exact() {
    let env = TestEnv::new().await;
    let store = FailAfter { inner: env.dynamo_items(), ok_calls: 3, calls: AtomicUsize::new(0), healed: false.into() };
    let p = env.pipeline_with(store);
    let records = batch(1, 200, &["a", "b", "c", "d"]);
    assert!(p.process(&records).await.is_err(), "injected failure fails the batch");
    let partial = env.dynamo_count().await;
    assert!(partial > 0 && partial < 200, "midway: {partial}");
    p.items.healed.store(true, Ordering::SeqCst);
    let retry = p.process(&records).await.unwrap();
    assert_eq!(retry.new_events, 0, "already counted on the first attempt");
    assert_eq!(env.dynamo_count().await, 200);
    let ids = env.lake_event_ids().await;
    assert_eq!((ids.len(), unique(&ids)), (200, 200));
    assert_eq!(env.counts().await.values().sum::<i64>(), 200);
}

/// Invariant: a suffix redelivered after a partial failure (first attempt's object landed) does
/// not duplicate lake rows, and an object that never landed is taken over by the retry.
#[tokio::test]
async fn suffix_redelivered_after_partial_failure_stays_exact() {
    let env = TestEnv::new().await;
    let store = FailAfter { inner: env.dynamo_items(), ok_calls: 0, calls: AtomicUsize::new(0), healed: false.into() };
    let p = env.pipeline_with(store);
    let records = batch(1, 100, &["a", "b"]);
    assert!(p.process(&records).await.is_err());
    p.items.healed.store(true, Ordering::SeqCst);
    // The mapping bisects: the two halves arrive as separate batches with new ranges.
    p.process(&records[..50]).await.unwrap();
    p.process(&records[50..]).await.unwrap();
    let ids = env.lake_event_ids().await;
    assert_eq!((ids.len(), unique(&ids)), (100, 100), "no lake row twice");
    assert_eq!(env.dynamo_count().await, 100);
    assert_eq!(env.counts().await.values().sum::<i64>(), 100);

    // Now the other case: the first object never landed (delete it), and a suffix comes again.
    let env2 = TestEnv::new().await;
    let p2 = env2.pipeline();
    let records = batch(1, 40, &["x"]);
    p2.process(&records).await.unwrap();
    for key in env2.keys("events/").await {
        env2.s3.delete_object().bucket(&env2.bucket).key(key).send().await.unwrap();
    }
    p2.process(&records[10..]).await.unwrap();
    assert_eq!(env2.lake_event_ids().await.len(), 30, "the retry rewrote the events it owns");
    assert_eq!(env2.counts().await["x"], 40);
}

/// Invariant: a poison record goes to dead-letter with its reason while its neighbours land.
#[tokio::test]
async fn poison_record_goes_to_dead_letter_while_neighbours_land() {
    let env = TestEnv::new().await;
    let now = Utc::now();
    let records = vec![
        record_of(&seq(1), &sample_event("a", None, now)),
        raw_record(&seq(2), b"{not json"),
        raw_record(&seq(3), br#"{"v": 7, "event": {}}"#),
        record_of(&seq(4), &sample_event("a", None, now)),
    ];
    let report = env.pipeline().process(&records).await.unwrap();
    assert_eq!(report.quarantined, 2);
    assert_eq!(env.lake_event_ids().await.len(), 2);
    let dl = env.keys("dead-letter/").await;
    assert_eq!(dl.len(), 1);
    let text = String::from_utf8(env.object(&dl[0]).await.to_vec()).unwrap();
    let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["reason_code"], "not_json");
    assert_eq!(rows[0]["sequence_number"], seq(2));
    assert_eq!(rows[1]["reason_code"], "unknown_version");
    assert!(rows[1]["payload_base64"].as_str().is_some_and(|s| !s.is_empty()));
}

/// Invariant: the largest batch the mapping delivers (10,000 records, ~6 MB) is handled in one go.
#[tokio::test]
async fn ten_thousand_records_in_one_batch() {
    let env = TestEnv::new().await;
    let records = batch(1, 10_000, &["page_view", "click", "add_to_cart", "purchase", "search"]);
    let bytes: usize = records.iter().map(|r| r.data.len()).sum();
    assert!(bytes > 5_000_000, "batch is {bytes} bytes");
    let report = env.pipeline().process(&records).await.unwrap();
    assert_eq!(report.new_events, 10_000);
    assert_eq!(env.dynamo_count().await, 10_000);
    let ids = env.lake_event_ids().await;
    assert_eq!((ids.len(), unique(&ids)), (10_000, 10_000));
    assert_eq!(env.counts().await.values().sum::<i64>(), 10_000);
}

/// Invariant: migrations apply to an empty database, and applying them again is harmless.
#[tokio::test]
async fn migrations_apply_twice() {
    let env = TestEnv::new().await;
    env.ledger.migrate().await.unwrap();
    env.ledger.migrate().await.unwrap();
    assert!(env.counts().await.is_empty());
}
