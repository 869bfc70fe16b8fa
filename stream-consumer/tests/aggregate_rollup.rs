//! The aggregates' per-batch rows and their rollup (migration 0009) against the local
//! PostgreSQL: readers see the same figures before and after a rollup, and concurrent claims and
//! rollups count every claimed event exactly once.

mod support;

use chrono::Utc;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use stream_consumer::ledger::Ledger;
use stream_consumer::plan::ClaimStatus;
use stream_consumer::sinks::postgres::PgLedger;
use stream_consumer::testing::ledger_load::Pools;
use uuid::Uuid;

/// A new database with every migration applied: a superuser pool on it and its options.
async fn migrated_database() -> (PgPool, PgConnectOptions) {
    let (db, options) = support::empty_database("test_rollup").await;
    PgLedger::connect(options.clone()).migrate().await.expect("migrate");
    (db, options)
}

/// What readers see: every aggregate view's figures, in a stable order.
async fn figures(db: &PgPool) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT site || '/' || event_type || '=' || event_count FROM event_type_counts ORDER BY 1",
        "SELECT site || '/' || event_type || '/' || hour || '=' || event_count FROM event_type_hourly_counts ORDER BY 1",
        "SELECT site || '/' || event_type || '/' || hour || '=' || events || '/' || visitors FROM site_hourly_stats ORDER BY 1",
        "SELECT site || '/' || day || '/' || path || '=' || events || '/' || views || '/' || visitors
         FROM site_daily_page_stats ORDER BY 1",
        "SELECT site || '/' || day || '/' || country || '=' || events || '/' || visitors
         FROM site_daily_country_stats ORDER BY 1",
    ] {
        out.extend(sqlx::query_scalar::<_, String>(sql).fetch_all(db).await.unwrap());
    }
    out
}

async fn delta_rows(db: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM event_type_counts_delta) + (SELECT count(*) FROM event_type_hourly_counts_delta)
              + (SELECT count(*) FROM site_hourly_delta) + (SELECT count(*) FROM site_daily_pages_delta)
              + (SELECT count(*) FROM site_daily_countries_delta)",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

/// Invariant: a rollup moves every per-batch row and changes no figure a reader sees; a second
/// rollup moves nothing.
#[tokio::test]
async fn rollup_changes_no_figure() {
    let (db, options) = migrated_database().await;
    let ledger = PgLedger::connect(options);
    let pools = Pools::default();
    let mut rng = fastrand::Rng::with_seed(3);
    let at = Utc::now();
    for owner in 0..4 {
        let batch = pools.batch(&mut rng, 200, 0.0, &[], owner);
        ledger.claim(&batch.claims, &batch.objects, |new| pools.counts(&batch, new, at)).await.unwrap();
    }
    let before = figures(&db).await;
    let rows = delta_rows(&db).await;
    assert!(rows > 0 && !before.is_empty());
    assert_eq!(ledger.rollup().await.unwrap(), Some(u64::try_from(rows).unwrap()));
    assert_eq!(delta_rows(&db).await, 0);
    assert_eq!(figures(&db).await, before, "the rollup changed what readers see");
    assert_eq!(ledger.rollup().await.unwrap(), Some(0));
    let total: i64 =
        sqlx::query_scalar("SELECT sum(event_count)::int8 FROM event_type_counts").fetch_one(&db).await.unwrap();
    assert_eq!(total, 800);
}

/// Invariant: writers claiming overlapping batches while rollups run count each newly claimed
/// event once, in every aggregate; a rollup that finds another one running does not wait.
#[tokio::test]
async fn claims_and_rollups_at_once_stay_exact() {
    let (db, options) = migrated_database().await;
    let pools = std::sync::Arc::new(Pools::default());
    let shared: Vec<Uuid> = (0..300).map(|_| Uuid::new_v4()).collect();
    let mut tasks = Vec::new();
    for writer in 0..6_i64 {
        let (pools, options, shared) = (pools.clone(), options.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let ledger = PgLedger::connect(options);
            let mut rng = fastrand::Rng::with_seed(writer as u64);
            let mut new = 0u64;
            for round in 0..8 {
                // A third of each batch repeats IDs every writer uses: only one claim of each wins.
                let batch = pools.batch(&mut rng, 150, 0.33, &shared, writer * 100 + round);
                let statuses =
                    ledger.claim(&batch.claims, &batch.objects, |n| pools.counts(&batch, n, Utc::now())).await.unwrap();
                new += statuses.iter().filter(|s| **s == ClaimStatus::New).count() as u64;
                ledger.rollup().await.unwrap();
            }
            new
        }));
    }
    let mut new = 0;
    for t in tasks {
        new += t.await.unwrap();
    }
    let claimed: i64 = sqlx::query_scalar("SELECT count(*) FROM seen_events").fetch_one(&db).await.unwrap();
    assert_eq!(u64::try_from(claimed).unwrap(), new);
    for sql in [
        "SELECT coalesce(sum(event_count), 0)::int8 FROM event_type_counts",
        "SELECT coalesce(sum(event_count), 0)::int8 FROM event_type_hourly_counts",
        "SELECT coalesce(sum(events), 0)::int8 FROM site_hourly",
        "SELECT coalesce(sum(events), 0)::int8 FROM site_daily_pages",
        "SELECT coalesce(sum(events), 0)::int8 FROM site_daily_countries",
    ] {
        let counted: i64 = sqlx::query_scalar(sql).fetch_one(&db).await.unwrap();
        assert_eq!(u64::try_from(counted).unwrap(), new, "{sql}");
    }

    // While one transaction holds the rollup, another rollup returns at once.
    let mut holder = db.begin().await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT aggregates_rollup()").fetch_one(&mut *holder).await.unwrap();
    assert_eq!(PgLedger::connect(options).rollup().await.unwrap(), None);
    holder.rollback().await.unwrap();
}
