//! Forget's PostgreSQL: erasure requests and their audit, the visitor filters, and each partition's swap committed in one transaction.

use std::collections::HashMap;

use schemas::lake::fnv1a64;
use schemas::visitors::IdKind;
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Row};

use crate::ToolError;
use crate::compact::store::replace_visitor_filters;
use crate::forget::plan::{Request, audit_hash};

/// Pending requests one run takes on. Every affected partition is rewritten once per run
/// whatever the number of requests, so a larger batch costs little more lake work; the bound
/// keeps one run's memory (the hashes) and its audit transaction small.
pub const REQUESTS_PER_RUN: i64 = 10_000;

/// One object replaced in a partition's commit: `new` is `None` when no row stayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    pub old: String,
    pub new: Option<String>,
    /// The new object's visitor filter.
    pub visitors: Option<Vec<u8>>,
}

/// What one request removed in one partition: lake rows and objects, and DynamoDB items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Removal {
    pub request: i64,
    pub rows: u64,
    pub objects: u64,
    pub items: u64,
}

/// An audit row, as `forget status` prints it (the raw ID only while pending).
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub site: String,
    pub id_kind: String,
    pub visitor_sha256: String,
    pub pending: bool,
    pub requested_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub dynamo_items_removed: i64,
    pub lake_rows_removed: i64,
    pub lake_objects_rewritten: i64,
}

/// One forget run at a time: a session-level advisory lock held by the returned connection
/// (closed on drop, so a killed run releases it).
pub async fn lock_run(pool: &PgPool) -> Result<Option<PoolConnection<Postgres>>, ToolError> {
    let mut conn = pool.acquire().await.map_err(ToolError::postgres("acquire forget connection"))?;
    conn.close_on_drop();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(fnv1a64(&["forget"]))
        .fetch_one(&mut *conn)
        .await
        .map_err(ToolError::postgres("lock the forget run"))?;
    Ok(locked.then_some(conn))
}

/// Records a request; asking again for a visitor with a pending request returns that request.
/// Returns (request ID, whether it is new).
pub async fn record(pool: &PgPool, site: &str, kind: IdKind, id: &str) -> Result<(i64, bool), ToolError> {
    let row = sqlx::query(
        "INSERT INTO erasure_requests (site, id_kind, visitor, visitor_sha256) VALUES ($1, $2, $3, $4)
         ON CONFLICT (visitor_sha256) WHERE completed_at IS NULL DO UPDATE SET site = EXCLUDED.site
         RETURNING id, (xmax = 0) AS inserted",
    )
    .bind(site)
    .bind(kind.as_str())
    .bind(id)
    .bind(audit_hash(kind, site, id))
    .fetch_one(pool)
    .await
    .map_err(ToolError::postgres("record the erasure request"))?;
    Ok((row.get(0), row.get(1)))
}

/// Up to [`REQUESTS_PER_RUN`] pending requests, oldest first, marked started.
pub async fn pending(conn: &mut PgConnection) -> Result<Vec<Request>, ToolError> {
    let rows = sqlx::query(
        "UPDATE erasure_requests SET started_at = coalesce(started_at, now())
         WHERE id IN (SELECT id FROM erasure_requests WHERE completed_at IS NULL ORDER BY id LIMIT $1)
         RETURNING id, site, id_kind, visitor",
    )
    .bind(REQUESTS_PER_RUN)
    .fetch_all(conn)
    .await
    .map_err(ToolError::postgres("read pending erasure requests"))?;
    let mut requests: Vec<Request> = rows
        .into_iter()
        .filter_map(|r| {
            Some(Request { id: r.get(0), site: r.get(1), kind: IdKind::parse(r.get(2))?, visitor: r.get(3) })
        })
        .collect();
    requests.sort_by_key(|r| r.id);
    Ok(requests)
}

/// Every object's visitor filter, by key. About 1.25 bytes per visitor of each object.
pub async fn filters(conn: &mut PgConnection) -> Result<HashMap<String, Vec<u8>>, ToolError> {
    let rows = sqlx::query("SELECT object_key, visitors FROM lake_object_visitors")
        .fetch_all(conn)
        .await
        .map_err(ToolError::postgres("read visitor filters"))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The visitor filters of `keys` that have one.
pub async fn filters_of(conn: &mut PgConnection, keys: &[String]) -> Result<HashMap<String, Vec<u8>>, ToolError> {
    let rows = sqlx::query("SELECT object_key, visitors FROM lake_object_visitors WHERE id = ANY($1::int8[])")
        .bind(keys.iter().map(|k| fnv1a64(&[k])).collect::<Vec<_>>())
        .fetch_all(conn)
        .await
        .map_err(ToolError::postgres("read visitor filters"))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Objects an erasure rewrote and committed but did not delete (a run stopped in between).
pub async fn unfinished(conn: &mut PgConnection) -> Result<Vec<String>, ToolError> {
    sqlx::query_scalar("SELECT old_key FROM lake_erasures WHERE deleted_at IS NULL ORDER BY old_key")
        .fetch_all(conn)
        .await
        .map_err(ToolError::postgres("read unfinished erasures"))
}

/// Stores filters for objects read without one (`indexed`: key → filter), outside any swap.
pub async fn add_filters(conn: &mut PgConnection, indexed: &[(String, Vec<u8>)]) -> Result<(), ToolError> {
    if indexed.is_empty() {
        return Ok(());
    }
    let added: Vec<(&str, &[u8])> = indexed.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    replace_visitor_filters(conn, &[], &added).await
}

/// The commit point of one partition's erasure, in one transaction: each old object is marked
/// erased into its replacement (so a redelivered batch does not write its rows again, and rows
/// that pointed at it follow), the swap is logged for a run that must finish it, the filters
/// follow the objects, and each request's counts (lake rows and objects, DynamoDB items) grow by
/// what it removed here.
pub async fn commit_partition(conn: &mut PgConnection, swaps: &[Swap], removals: &[Removal]) -> Result<(), ToolError> {
    let mut tx = sqlx::Connection::begin(conn).await.map_err(ToolError::postgres("begin erasure"))?;
    let old: Vec<String> = swaps.iter().map(|s| s.old.clone()).collect();
    let new: Vec<Option<String>> = swaps.iter().map(|s| s.new.clone()).collect();
    let added: Vec<(&str, &[u8])> =
        swaps.iter().filter_map(|s| Some((s.new.as_deref()?, s.visitors.as_deref()?))).collect();
    replace_visitor_filters(&mut tx, &old, &added).await?;
    // Three statements, not CTEs of one: a row can be both an old object's and one pointing at
    // another old object (a compactor's unfinished leftover), and one statement may not change a
    // row twice. Rows pointing at an old object follow it first; then the old objects' own marks.
    sqlx::query(
        "UPDATE lake_objects lo SET compacted_into = m.new, erased_at = now()
         FROM UNNEST($1::text[], $2::text[]) AS m(old, new) WHERE lo.compacted_into = m.old",
    )
    .bind(&old)
    .bind(&new)
    .execute(&mut *tx)
    .await
    .map_err(ToolError::postgres("move marks to rewritten objects"))?;
    sqlx::query(
        "INSERT INTO lake_objects (id, object_key, compacted_into, erased_at)
         SELECT id, old, new, now() FROM UNNEST($1::int8[], $2::text[], $3::text[]) AS t(id, old, new)
         ON CONFLICT (id) DO UPDATE SET compacted_into = EXCLUDED.compacted_into, erased_at = now()",
    )
    .bind(old.iter().map(|k| fnv1a64(&[k])).collect::<Vec<_>>())
    .bind(&old)
    .bind(&new)
    .execute(&mut *tx)
    .await
    .map_err(ToolError::postgres("mark erased objects"))?;
    sqlx::query(
        "INSERT INTO lake_erasures (old_key, new_key) SELECT * FROM UNNEST($1::text[], $2::text[])
         ON CONFLICT (old_key) DO UPDATE SET new_key = EXCLUDED.new_key, committed_at = now(), deleted_at = NULL",
    )
    .bind(&old)
    .bind(&new)
    .execute(&mut *tx)
    .await
    .map_err(ToolError::postgres("log the swaps"))?;
    add_removals(&mut tx, removals).await?;
    tx.commit().await.map_err(ToolError::postgres("commit erasure"))?;
    Ok(())
}

async fn add_removals(conn: &mut PgConnection, removals: &[Removal]) -> Result<(), ToolError> {
    sqlx::query(
        "UPDATE erasure_requests r
         SET lake_rows_removed = r.lake_rows_removed + c.n, lake_objects_rewritten = r.lake_objects_rewritten + c.o,
             dynamo_items_removed = r.dynamo_items_removed + c.i
         FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[]) AS c(id, n, o, i) WHERE r.id = c.id",
    )
    .bind(removals.iter().map(|r| r.request).collect::<Vec<_>>())
    .bind(removals.iter().map(|r| r.rows as i64).collect::<Vec<_>>())
    .bind(removals.iter().map(|r| r.objects as i64).collect::<Vec<_>>())
    .bind(removals.iter().map(|r| r.items as i64).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map_err(ToolError::postgres("count removals"))?;
    Ok(())
}

/// Completes requests: the raw ID is dropped, the audit stays.
pub async fn complete(conn: &mut PgConnection, requests: &[i64]) -> Result<(), ToolError> {
    sqlx::query(
        "UPDATE erasure_requests SET completed_at = now(), visitor = NULL WHERE id = ANY($1) AND completed_at IS NULL",
    )
    .bind(requests)
    .execute(conn)
    .await
    .map_err(ToolError::postgres("complete erasure requests"))?;
    Ok(())
}

/// Every request, newest first.
pub async fn audit(pool: &PgPool) -> Result<Vec<AuditRow>, ToolError> {
    let rows = sqlx::query(
        "SELECT id, site, id_kind, visitor_sha256, completed_at IS NULL,
                to_char(requested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                to_char(completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                dynamo_items_removed, lake_rows_removed, lake_objects_rewritten
         FROM erasure_requests ORDER BY id DESC",
    )
    .fetch_all(pool)
    .await
    .map_err(ToolError::postgres("read the erasure audit"))?;
    Ok(rows
        .into_iter()
        .map(|r| AuditRow {
            id: r.get(0),
            site: r.get(1),
            id_kind: r.get(2),
            visitor_sha256: r.get(3),
            pending: r.get(4),
            requested_at: r.get(5),
            started_at: r.get(6),
            completed_at: r.get(7),
            dynamo_items_removed: r.get(8),
            lake_rows_removed: r.get(9),
            lake_objects_rewritten: r.get(10),
        })
        .collect())
}
