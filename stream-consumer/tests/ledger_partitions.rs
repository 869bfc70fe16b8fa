//! The day-partitioned dedup ledger (migration 0008) against the local PostgreSQL: the upgrade of
//! an existing ledger, first-claim-wins across days, pruning by dropping partitions, and exactly
//! one winner per event while the epoch moves to a new day under concurrent claims.

mod support;

use chrono::{NaiveDate, Utc};
use service_kit::postgres::{DatabaseConfig, DatabaseSource, MIGRATOR, connect_options};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use stream_consumer::aggregate::Counts;
use stream_consumer::ledger::Ledger;
use stream_consumer::plan::{Claim, ClaimStatus, LakeObject};
use stream_consumer::sinks::postgres::PgLedger;
use uuid::Uuid;

/// A new, empty database; returns a superuser pool on it and its connection options.
async fn fresh_database() -> (PgPool, PgConnectOptions) {
    support::empty_database("test_ledger").await
}

fn claim(event_id: Uuid, owner: i64) -> Claim {
    Claim { event_id, owner, lake_object: 7 }
}

fn object() -> Vec<LakeObject> {
    vec![LakeObject { id: 7, key: "events/x.parquet".into(), visitors: Vec::new() }]
}

async fn claim_all(ledger: &PgLedger, claims: &[Claim]) -> Vec<ClaimStatus> {
    ledger.claim(claims, &object(), |_| Counts::default()).await.expect("claim")
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// The day partition holding each event, in the order given (None: in no partition).
async fn days_of(db: &PgPool, ids: &[Uuid]) -> Vec<Option<NaiveDate>> {
    let mut out = Vec::new();
    for id in ids {
        let days: Vec<NaiveDate> =
            sqlx::query_scalar("SELECT day FROM seen_events WHERE event_id = $1").bind(id).fetch_all(db).await.unwrap();
        assert!(days.len() <= 1, "{id} is in {} partitions", days.len());
        out.push(days.first().copied());
    }
    out
}

/// Moves the epoch back by `days`, as if the ledger had last rolled that long ago.
async fn set_epoch_back(db: &PgPool, days: i32) {
    sqlx::query("UPDATE ledger_epoch SET day = (now() AT TIME ZONE 'UTC')::date - $1")
        .bind(days)
        .execute(db)
        .await
        .unwrap();
    sqlx::query("SELECT ledger_add_partition(day) FROM ledger_epoch").execute(db).await.unwrap();
}

/// Invariant: an existing ledger keeps working across the upgrade — claims made before 0008
/// still deduplicate (and keep their owner) afterwards, each in the partition of its day, and
/// the prune forgets whole days once they are older than the window.
#[tokio::test]
async fn upgrade_keeps_earlier_claims_and_prune_drops_old_days() {
    let (db, options) = fresh_database().await;
    MIGRATOR.run_to(7, &db).await.expect("migrations up to 0007");
    let (old, recent, fresh) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("INSERT INTO lake_objects (id, object_key) VALUES (7, 'events/x.parquet')").execute(&db).await.unwrap();
    sqlx::query(
        "INSERT INTO seen_events (event_id, owner, lake_object, claimed_at) VALUES
             ($1, 1, 7, now() - interval '3 days'), ($2, 2, 7, now())",
    )
    .bind(old)
    .bind(recent)
    .execute(&db)
    .await
    .unwrap();

    let ledger = PgLedger::connect(options);
    ledger.migrate().await.expect("migrate to 0008 and later");
    assert_eq!(days_of(&db, &[old, recent]).await, [Some(today() - chrono::Days::new(3)), Some(today())]);
    let statuses = claim_all(&ledger, &[claim(old, 1), claim(recent, 3), claim(fresh, 4)]).await;
    assert!(matches!(statuses[0], ClaimStatus::Own { .. }), "{statuses:?}");
    assert_eq!(statuses[1..], [ClaimStatus::Duplicate, ClaimStatus::New]);

    // A 24-hour window: the day three days back is forgotten, today's claims stay.
    assert_eq!(ledger.prune(24).await.unwrap(), 1);
    assert_eq!(days_of(&db, &[old, recent, fresh]).await, [None, Some(today()), Some(today())]);
    assert_eq!(claim_all(&ledger, &[claim(old, 9)]).await, [ClaimStatus::New], "forgotten, so new again");
    assert_eq!(ledger.prune(24).await.unwrap(), 0, "pruning again forgets nothing more");
}

/// Invariant: a claim in an earlier day's partition wins over a later claim of the same ID,
/// which is neither inserted nor counted; the first claim after midnight moves the epoch.
#[tokio::test]
async fn earlier_days_win_and_the_epoch_moves() {
    let (db, options) = fresh_database().await;
    let ledger = PgLedger::connect(options);
    ledger.migrate().await.unwrap();
    set_epoch_back(&db, 1).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    // Claimed into yesterday's partition; the transaction saw the epoch behind and moved it.
    assert_eq!(claim_all(&ledger, &[claim(a, 1)]).await, [ClaimStatus::New]);
    let epoch: NaiveDate = sqlx::query_scalar("SELECT day FROM ledger_epoch").fetch_one(&db).await.unwrap();
    assert_eq!(epoch, today());
    let statuses = claim_all(&ledger, &[claim(a, 2), claim(b, 2)]).await;
    assert_eq!(statuses, [ClaimStatus::Duplicate, ClaimStatus::New]);
    assert_eq!(days_of(&db, &[a, b]).await, [Some(today() - chrono::Days::new(1)), Some(today())]);
    // The redelivery of the first claim's record is still its own, from the earlier day.
    assert!(matches!(claim_all(&ledger, &[claim(a, 1)]).await[..], [ClaimStatus::Own { .. }]));
}

/// Invariant: with many batches claiming the same IDs at once while the epoch moves to a new
/// day, every ID has exactly one winner and lies in exactly one partition.
#[tokio::test]
async fn one_winner_per_event_while_the_epoch_moves() {
    let (db, options) = fresh_database().await;
    PgLedger::connect(options.clone()).migrate().await.unwrap();
    for round in 0..5 {
        set_epoch_back(&db, 1).await;
        let ids: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
        let mut tasks = Vec::new();
        for writer in 0..12_i64 {
            let (ids, ledger) = (ids.clone(), PgLedger::connect(options.clone()));
            tasks.push(tokio::spawn(async move {
                // Each writer claims the IDs in its own order, in a few batches.
                let mut mine: Vec<Claim> = ids.iter().map(|&id| claim(id, writer)).collect();
                fastrand::shuffle(&mut mine);
                let mut won = Vec::new();
                for chunk in mine.chunks(50) {
                    let statuses = claim_all(&ledger, chunk).await;
                    won.extend(
                        chunk.iter().zip(statuses).filter(|(_, s)| *s == ClaimStatus::New).map(|(c, _)| c.event_id),
                    );
                }
                won
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            winners.extend(t.await.unwrap());
        }
        winners.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(winners, expected, "round {round}: each ID must be won exactly once");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM seen_events WHERE event_id = ANY($1)")
            .bind(&ids)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(rows, 200, "round {round}: one ledger row per ID");
    }
}

/// The plan (`EXPLAIN`, one line per row) the claim statement gets for a batch of `n` new IDs, on
/// the ledger's own connection.
async fn claim_plan(ledger: &PgLedger, n: usize) -> Vec<String> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let explain = format!("EXPLAIN {}", stream_consumer::sinks::postgres::CLAIM_SQL);
    sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
        .bind(&ids)
        .bind(vec![1i64; n])
        .bind(vec![7i64; n])
        .bind(today())
        .fetch_all(ledger.pool())
        .await
        .expect("explain the claim")
}

/// Invariant: once a day's partition has grown, `refresh_statistics` analyzes the ledger (once:
/// the next call finds nothing due), and the claim then looks IDs up through each partition's
/// index. Without statistics it scanned the day's partition whole, so every claim's cost grew
/// with the claims made that day (bench/RESULTS.md, "Planner statistics for the ledger"). And
/// the claim transaction runs without JIT compilation (`ENTER_SQL`), which the planner's
/// estimates for this statement used to trigger on every claim: off for that transaction only.
#[tokio::test]
async fn analyzed_ledger_keeps_claims_on_the_index() {
    let (admin, admin_options) = fresh_database().await;
    // The options the consumer builds from DATABASE_URL, session settings included.
    let url = support::database_url(admin_options.get_database().expect("a database name"));
    let config = DatabaseConfig { source: DatabaseSource::Url(url), ssl_root_cert: None };
    let options = connect_options(&config, None, "ledger_partitions_test").await.expect("connect options");
    let ledger = PgLedger::connect(options);
    ledger.migrate().await.expect("migrate");
    let mut tx = ledger.pool().begin().await.unwrap();
    let before: String = sqlx::query_scalar("SHOW jit").fetch_one(&mut *tx).await.unwrap();
    sqlx::query(stream_consumer::sinks::postgres::ENTER_SQL).execute(&mut *tx).await.unwrap();
    let during: String = sqlx::query_scalar("SHOW jit").fetch_one(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    let after: String = sqlx::query_scalar("SHOW jit").fetch_one(ledger.pool()).await.unwrap();
    assert_eq!(during, "off", "no JIT within the claim's transaction");
    assert_eq!(after, before, "the server's setting again after it");

    // A day's worth of earlier claims, large enough that probing the index for 500 IDs beats
    // reading the partition (at 20,000 rows a scan is rightly cheaper). Written by a pool that
    // is then closed: a backend reports its table counters when it exits.
    const ROWS: i64 = 300_000;
    sqlx::query(
        "INSERT INTO seen_events (event_id, owner, lake_object, day)
         SELECT gen_random_uuid(), 1, 7, day FROM generate_series(1, $1), ledger_epoch",
    )
    .bind(ROWS)
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let changed: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(n_mod_since_analyze), 0)::int8 FROM pg_stat_user_tables WHERE relname ~ '^seen_events_'",
        )
        .fetch_one(ledger.pool())
        .await
        .unwrap();
        if changed >= ROWS {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the claims' counters never arrived: {changed}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let before = claim_plan(&ledger, 500).await.join("\n");
    assert!(before.contains("Seq Scan on seen_events_"), "without statistics the partition is scanned:\n{before}");

    assert!(ledger.refresh_statistics().await.expect("refresh statistics"), "300,000 new claims make an ANALYZE due");
    assert!(!ledger.refresh_statistics().await.unwrap(), "nothing changed since the last ANALYZE");
    let analyzed: Vec<(String, f32)> = sqlx::query_as(
        "SELECT relname::text, reltuples FROM pg_class WHERE relname ~ '^seen_events(_[0-9]{8})?$' ORDER BY 1",
    )
    .fetch_all(ledger.pool())
    .await
    .unwrap();
    assert_eq!(analyzed.len(), 2, "the parent and the epoch's partition: {analyzed:?}");
    assert!(analyzed.iter().all(|(_, rows)| *rows > 0.9 * ROWS as f32), "every table analyzed: {analyzed:?}");

    let plan = claim_plan(&ledger, 500).await;
    let text = plan.join("\n");
    let scans: Vec<&String> = plan.iter().filter(|line| line.contains(" on seen_events_")).collect();
    assert!(!scans.is_empty(), "the plan reads the partitions:\n{text}");
    assert!(scans.iter().all(|line| line.contains("Index")), "a partition scanned whole:\n{text}");
    assert!(!text.contains("JIT"), "no JIT:\n{text}");
}
