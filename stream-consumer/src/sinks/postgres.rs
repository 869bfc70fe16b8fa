//! PostgreSQL: the dedup ledger and counts (one transaction per batch) and the local runner's checkpoints.

use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use service_kit::postgres::{Database, MIGRATOR};
use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::aggregate::Counts;
use crate::error::ConsumerError;
use crate::ledger::Ledger;
use crate::plan::{Claim, ClaimStatus, LakeObject};

/// Connections per process: a Lambda instance handles one batch at a time, and the local
/// runner's shards share two; more would only exhaust RDS connections at high concurrency.
pub const POOL_MAX_CONNECTIONS: u32 = 2;

/// The precision of visitor sketches (`hll` log2m: 2^14 registers, relative standard error
/// 1.04/√16384 ≈ 0.8%); migration 0007 gives the columns' defaults the same, because sketches of
/// different precisions cannot be unioned.
pub const VISITOR_SKETCH_LOG2M: i32 = 14;

/// The claim statement: $1 event IDs, $2 owners, $3 lake objects (one per claim), $4 the epoch.
/// Returns one row per claim: inserted now, or the earlier claim's owner and lake object.
///
/// `known` reads the statement's snapshot once, over every partition: a claim in an
/// earlier day (frozen while this transaction holds the epoch) keeps the event from being
/// inserted again; in the epoch's day ON CONFLICT decides. A row committed by a
/// concurrent batch after the statement began is neither inserted nor known, and is
/// correctly treated as owned by someone else. Inserting in `event_id` order makes
/// batches that share IDs wait for each other in one order, never in a cycle (a deadlock
/// that failed both batches).
///
/// Its lookup of the IDs (`known`) must use each partition's index; that depends on planner
/// statistics, which [`PgLedger::refresh_statistics`](crate::ledger::Ledger::refresh_statistics) keeps.
pub const CLAIM_SQL: &str = "WITH input AS (
         SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::int8[]) AS t(event_id, owner, lake_object)
     ), known AS (
         SELECT s.event_id, s.owner, s.lake_object, s.day FROM seen_events s JOIN input i USING (event_id)
     ), inserted AS (
         INSERT INTO seen_events (event_id, owner, lake_object, day)
         SELECT event_id, owner, lake_object, $4 FROM input
         WHERE event_id NOT IN (SELECT event_id FROM known WHERE day < $4)
         ORDER BY event_id
         ON CONFLICT (event_id, day) DO NOTHING
         RETURNING event_id
     )
     SELECT i.event_id, (ins.event_id IS NOT NULL) AS inserted, k.owner, k.lake_object, lo.object_key,
            (lo.compacted_into IS NOT NULL OR lo.erased_at IS NOT NULL) AS compacted
     FROM input i
     LEFT JOIN inserted ins ON ins.event_id = i.event_id
     LEFT JOIN known k ON k.event_id = i.event_id
     LEFT JOIN lake_objects lo ON lo.id = k.lake_object";

/// The claim transaction's first statement: enters the ledger's epoch (migration 0008) and turns
/// JIT compilation off until the transaction ends. JIT is for long analytical queries: it costs
/// 100–200 ms per execution, is not kept with a prepared statement, and starts on the planner's
/// cost estimate, which statements over `UNNEST`ed arrays and a partitioned ledger can overshoot
/// by orders of magnitude (bench/RESULTS.md, "Planner statistics for the ledger": a 10 ms claim
/// took 210 ms, 200 of them compiling). Set here, transaction-local and in a statement the claim
/// makes anyway, rather than as a connection's startup option, which poolers such as PgBouncer
/// refuse and RDS Proxy would pin the session for.
pub const ENTER_SQL: &str = "SELECT epoch, behind, set_config('jit', 'off', true) FROM ledger_enter()";

/// The ledger and counts store.
#[derive(Clone)]
pub struct PgLedger {
    db: Arc<Database>,
}

impl PgLedger {
    /// A ledger over `db` (whose credentials are re-read when a rotated secret is refused).
    pub fn new(db: Database) -> Self {
        PgLedger { db: Arc::new(db) }
    }

    /// A ledger over fixed connection options, connecting on first use.
    pub fn connect(options: PgConnectOptions) -> Self {
        Self::new(Database::with_options(options, POOL_MAX_CONNECTIONS))
    }

    pub fn pool(&self) -> &PgPool {
        self.db.pool()
    }

    /// A transaction on a pooled connection; a login refused because the secret rotated since
    /// this process read it is renewed and tried again at once, so the batch goes on.
    async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.db.retry_refused_login(|| self.pool().begin(), |e: &sqlx::Error| Some(e)).await
    }

    /// Applies the embedded migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), ConsumerError> {
        MIGRATOR.run(self.pool()).await.map_err(|e| ConsumerError::Postgres { step: "migrate", source: e.into() })
    }

    /// The local runner's checkpoint for a shard: (last processed sequence number, shard finished).
    pub async fn checkpoint(&self, stream: &str, shard: &str) -> Result<(Option<String>, bool), ConsumerError> {
        let row = sqlx::query(
            "SELECT sequence_number, shard_closed FROM shard_checkpoints WHERE stream_name = $1 AND shard_id = $2",
        )
        .bind(stream)
        .bind(shard)
        .fetch_optional(self.pool())
        .await
        .map_err(ConsumerError::postgres("read checkpoint"))?;
        Ok(row.map(|r| (r.get(0), r.get(1))).unwrap_or((None, false)))
    }

    /// Saves a shard's checkpoint after a batch has fully succeeded (or was dead-lettered).
    pub async fn save_checkpoint(
        &self,
        stream: &str,
        shard: &str,
        sequence: Option<&str>,
        closed: bool,
    ) -> Result<(), ConsumerError> {
        sqlx::query(
            "INSERT INTO shard_checkpoints (stream_name, shard_id, sequence_number, shard_closed, updated_at)
             VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (stream_name, shard_id) DO UPDATE
                 SET sequence_number = COALESCE(EXCLUDED.sequence_number, shard_checkpoints.sequence_number),
                     shard_closed = EXCLUDED.shard_closed, updated_at = now()",
        )
        .bind(stream)
        .bind(shard)
        .bind(sequence)
        .bind(closed)
        .execute(self.pool())
        .await
        .map_err(ConsumerError::postgres("save checkpoint"))?;
        Ok(())
    }

    /// Counts per event type, all sites together (for tests and the verifier).
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, ConsumerError> {
        let rows = sqlx::query(
            "SELECT event_type, SUM(event_count)::int8 FROM event_type_counts GROUP BY event_type ORDER BY event_type",
        )
        .fetch_all(self.pool())
        .await
        .map_err(ConsumerError::postgres("read counts"))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Moves the ledger's epoch to today (UTC, the database's clock), creating its partition.
    /// A failure is only logged: claims go on into the previous day's partition, which is as
    /// exact, and the next claim tries again.
    async fn roll(&self) {
        match sqlx::query_scalar::<_, NaiveDate>("SELECT ledger_roll()").fetch_one(self.pool()).await {
            Ok(day) => tracing::info!(%day, "ledger epoch moved to a new day"),
            Err(e) => tracing::warn!(error = %e, "could not move the ledger epoch; the next claim tries again"),
        }
    }

    /// `claim`'s answer for each claim, from the rows of its statement.
    fn statuses(claims: &[Claim], rows: Vec<PgRow>) -> Vec<ClaimStatus> {
        let mut by_id = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let id: Uuid = row.get(0);
            let inserted: bool = row.get(1);
            let owner: Option<i64> = row.get(2);
            let lake_object: Option<i64> = row.get(3);
            let key: Option<String> = row.get(4);
            let compacted: Option<bool> = row.get(5);
            by_id.insert(id, (inserted, owner, lake_object, key, compacted.unwrap_or(false)));
        }
        claims
            .iter()
            .map(|c| match by_id.remove(&c.event_id) {
                Some((true, ..)) => ClaimStatus::New,
                Some((false, Some(owner), Some(lake_object), object_key, compacted)) if owner == c.owner => {
                    ClaimStatus::Own { lake_object, object_key, compacted }
                }
                _ => ClaimStatus::Duplicate,
            })
            .collect()
    }

    /// Adds `counts` to the type totals, the hourly counts and the site tables with one
    /// statement, in `tx`, as rows of their `_delta` tables (migration 0009): inserts of this
    /// batch's figures, which lock no row another batch needs, so concurrent batches never wait
    /// for each other here; `rollup` folds them into the `_rollup` tables later. The site tables
    /// get one input row per key and visitor: grouped by key, the events are summed and the
    /// visitors hashed into a sketch (`hll_add_agg` skips the NULL hash of events without a
    /// visitor; `coalesce` keeps a key whose events have none).
    async fn add_counts(tx: &mut Transaction<'_, Postgres>, counts: &Counts) -> Result<(), ConsumerError> {
        let cols = counts.as_columns();
        sqlx::query(
            "WITH hourly AS (
                 INSERT INTO event_type_hourly_counts_delta (site, event_type, hour, event_count)
                 SELECT * FROM UNNEST($4::text[], $5::text[], $6::timestamptz[], $7::int8[])
             ), site_hours AS (
                 INSERT INTO site_hourly_delta (site, event_type, hour, events, visitors)
                 SELECT site, event_type, hour, sum(n), coalesce(hll_add_agg(hll_hash_text(visitor), $19), hll_empty($19))
                 FROM UNNEST($8::text[], $9::text[], $10::timestamptz[], $11::text[], $12::int8[])
                     AS t(site, event_type, hour, visitor, n)
                 GROUP BY site, event_type, hour
             ), pages AS (
                 INSERT INTO site_daily_pages_delta (site, day, path, events, views, visitors)
                 SELECT site, day, path, sum(n), sum(v), coalesce(hll_add_agg(hll_hash_text(visitor), $19), hll_empty($19))
                 FROM UNNEST($13::text[], $14::date[], $15::text[], $16::text[], $17::int8[], $18::int8[])
                     AS t(site, day, path, visitor, n, v)
                 GROUP BY site, day, path
             ), countries AS (
                 INSERT INTO site_daily_countries_delta (site, day, country, events, visitors)
                 SELECT site, day, country, sum(n), coalesce(hll_add_agg(hll_hash_text(visitor), $19), hll_empty($19))
                 FROM UNNEST($20::text[], $21::date[], $22::text[], $23::text[], $24::int8[])
                     AS t(site, day, country, visitor, n)
                 GROUP BY site, day, country
             )
             INSERT INTO event_type_counts_delta (site, event_type, event_count)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[])",
        )
        .bind(cols.total_sites)
        .bind(cols.total_types)
        .bind(cols.total_counts)
        .bind(cols.hourly_sites)
        .bind(cols.hourly_types)
        .bind(cols.hourly_hours)
        .bind(cols.hourly_counts)
        .bind(cols.site_hourly_sites)
        .bind(cols.site_hourly_types)
        .bind(cols.site_hourly_hours)
        .bind(cols.site_hourly_visitors)
        .bind(cols.site_hourly_events)
        .bind(cols.page_sites)
        .bind(cols.page_days)
        .bind(cols.page_paths)
        .bind(cols.page_visitors)
        .bind(cols.page_events)
        .bind(cols.page_views)
        .bind(VISITOR_SKETCH_LOG2M)
        .bind(cols.country_sites)
        .bind(cols.country_days)
        .bind(cols.country_codes)
        .bind(cols.country_visitors)
        .bind(cols.country_events)
        .execute(&mut **tx)
        .await
        .map_err(ConsumerError::postgres("upsert counts"))?;
        Ok(())
    }
}

impl Ledger for PgLedger {
    /// In one transaction: enters the ledger's epoch (the day claims go to; see migration
    /// 0008), registers the lake objects, claims every event (first claim wins, over every day's
    /// partition), and adds `count(new)` — the counts of the events claimed just now — to the
    /// totals, hourly counts and site tables with one `UNNEST` upsert. Returns one status per
    /// claim. A transaction that found the epoch behind the date moves it after committing.
    async fn claim(
        &self,
        claims: &[Claim],
        objects: &[LakeObject],
        count: impl FnOnce(&[usize]) -> Counts + Send,
    ) -> Result<Vec<ClaimStatus>, ConsumerError> {
        metrics::counter!("consumer_sink_requests_total", "sink" => "postgres").increment(1);
        let mut tx = self.begin().await.map_err(ConsumerError::postgres("begin"))?;
        let (epoch, behind, _): (NaiveDate, bool, String) = sqlx::query_as(ENTER_SQL)
            .fetch_one(&mut *tx)
            .await
            .map_err(ConsumerError::postgres("enter the ledger epoch"))?;
        // With each object, its visitor filter (migration 0011), which lives as long as the
        // object: the same statement, so registering stays one round trip.
        sqlx::query(
            "WITH registered AS (
                 INSERT INTO lake_objects (id, object_key) SELECT * FROM UNNEST($1::int8[], $2::text[])
                 ON CONFLICT (id) DO NOTHING
             )
             INSERT INTO lake_object_visitors (id, object_key, visitors)
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::bytea[]) ON CONFLICT (id) DO NOTHING",
        )
        .bind(objects.iter().map(|o| o.id).collect::<Vec<_>>())
        .bind(objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>())
        .bind(objects.iter().map(|o| o.visitors.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(ConsumerError::postgres("register lake objects"))?;

        // Why this is exact across partitions and concurrent batches: see CLAIM_SQL.
        let rows = sqlx::query(CLAIM_SQL)
            .bind(claims.iter().map(|c| c.event_id).collect::<Vec<_>>())
            .bind(claims.iter().map(|c| c.owner).collect::<Vec<_>>())
            .bind(claims.iter().map(|c| c.lake_object).collect::<Vec<_>>())
            .bind(epoch)
            .fetch_all(&mut *tx)
            .await
            .map_err(ConsumerError::postgres("claim events"))?;

        let statuses = Self::statuses(claims, rows);
        let new: Vec<usize> =
            statuses.iter().enumerate().filter(|(_, s)| **s == ClaimStatus::New).map(|(i, _)| i).collect();
        let counts = count(&new);
        if !counts.is_empty() {
            Self::add_counts(&mut tx, &counts).await?;
        }
        tx.commit().await.map_err(ConsumerError::postgres("commit"))?;
        if behind {
            self.roll().await;
        }
        Ok(statuses)
    }

    /// Moves events whose earlier lake object never landed to this attempt's object.
    async fn reassign(&self, moves: &[(Uuid, i64)]) -> Result<(), ConsumerError> {
        if moves.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE seen_events s SET lake_object = m.lake_object
             FROM UNNEST($1::uuid[], $2::int8[]) AS m(event_id, lake_object) WHERE s.event_id = m.event_id",
        )
        .bind(moves.iter().map(|m| m.0).collect::<Vec<_>>())
        .bind(moves.iter().map(|m| m.1).collect::<Vec<_>>())
        .execute(self.pool())
        .await
        .map_err(ConsumerError::postgres("reassign lake objects"))?;
        Ok(())
    }

    /// Forgets claims made longer ago than the dedup window (and lake objects older than twice
    /// it): drops the ledger's partitions of days that ended before the window began (see
    /// migration 0008), so a claim is kept for at least the window and at most a day longer.
    /// Returns how many claims were forgotten (PostgreSQL's estimate for large partitions).
    async fn prune(&self, window_hours: u32) -> Result<u64, ConsumerError> {
        let cutoff = Utc::now() - chrono::Duration::hours(i64::from(window_hours));
        let forgotten: i64 = sqlx::query_scalar("SELECT ledger_prune($1)")
            .bind(cutoff)
            .fetch_one(self.pool())
            .await
            .map_err(ConsumerError::postgres("prune seen_events"))?;
        sqlx::query("DELETE FROM lake_objects WHERE created_at < $1")
            .bind(cutoff - chrono::Duration::hours(i64::from(window_hours)))
            .execute(self.pool())
            .await
            .map_err(ConsumerError::postgres("prune lake_objects"))?;
        Ok(u64::try_from(forgotten).unwrap_or(0))
    }

    /// Folds the committed `_delta` rows of every aggregate into its `_rollup` table, in one
    /// transaction (`aggregates_rollup()`, migration 0009). Returns how many delta rows it
    /// moved, or `None` when another process was rolling up (it does not wait).
    async fn rollup(&self) -> Result<Option<u64>, ConsumerError> {
        let moved: i64 = sqlx::query_scalar("SELECT aggregates_rollup()")
            .fetch_one(self.pool())
            .await
            .map_err(ConsumerError::postgres("roll up aggregates"))?;
        Ok(u64::try_from(moved).ok())
    }

    /// `ledger_analyze()` (migration 0010): analyzes the ledger when a partition has changed by
    /// more than 1,000 rows + 10 % since its last ANALYZE and no other process is at it.
    async fn refresh_statistics(&self) -> Result<bool, ConsumerError> {
        sqlx::query_scalar("SELECT ledger_analyze()")
            .fetch_one(self.pool())
            .await
            .map_err(ConsumerError::postgres("analyze the ledger"))
    }
}
