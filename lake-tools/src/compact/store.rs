//! The compactor's I/O: listing, reading, writing and deleting lake objects in S3, and the compaction marks and lock in PostgreSQL.
//!
//! The only I/O of compaction: `plan.rs` and `rewrite.rs` are pure and unit-tested with fixtures.

use std::collections::{HashMap, HashSet};

use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use schemas::lake::{Partition, fnv1a64};
use service_kit::s3::Bucket;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Row};

use crate::ToolError;
use crate::compact::plan::ObjectInfo;

/// Objects fetched at once when reading a chunk's inputs.
const GET_CONCURRENCY: usize = 8;

/// The lake bucket, as the compactor uses it.
#[derive(Clone)]
pub struct LakeFiles {
    bucket: Bucket,
}

impl LakeFiles {
    pub fn new(client: Client, bucket: String) -> Self {
        LakeFiles { bucket: Bucket::new(client, bucket) }
    }

    pub fn bucket(&self) -> &str {
        self.bucket.name()
    }

    /// Every object under `prefix`, with its size.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ToolError> {
        Ok(self.bucket.list(prefix).await?.into_iter().map(|(key, size)| ObjectInfo { key, size }).collect())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, ToolError> {
        Ok(self.bucket.get(key).await?)
    }

    /// Reads `keys`, a few at a time, returning (key, bytes) in the order given.
    pub async fn get_all(&self, keys: &[String]) -> Result<Vec<(String, Bytes)>, ToolError> {
        futures::stream::iter(keys.iter().cloned())
            .map(|key| async move { self.get(&key).await.map(|body| (key, body)) })
            .buffered(GET_CONCURRENCY)
            .try_collect()
            .await
    }

    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), ToolError> {
        Ok(self.bucket.put(key, body, "application/vnd.apache.parquet").await?)
    }

    /// Deletes `keys` (a missing key is not an error: deleting is idempotent, as a re-run needs).
    pub async fn delete(&self, keys: &[String]) -> Result<(), ToolError> {
        Ok(self.bucket.delete(keys).await?)
    }
}

/// A session-level advisory lock on one partition, held by the returned connection. The
/// connection is closed (not returned to the pool) when dropped, which releases the lock
/// whatever happens — error, panic or a killed process (PostgreSQL ends the session).
pub async fn lock_partition(pool: &PgPool, p: &Partition) -> Result<Option<PoolConnection<Postgres>>, ToolError> {
    let mut conn = pool.acquire().await.map_err(ToolError::postgres("acquire compaction connection"))?;
    conn.close_on_drop();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(lock_id(p))
        .fetch_one(&mut *conn)
        .await
        .map_err(ToolError::postgres("lock partition"))?;
    Ok(locked.then_some(conn))
}

/// The advisory lock key of a partition: one 64-bit space shared with nothing else in this database.
pub fn lock_id(p: &Partition) -> i64 {
    fnv1a64(&["compactor", &p.path()])
}

/// `compacted_into` of each of `keys` that has one (`lake_objects.id` is the key's hash, as the
/// consumer stores it).
pub async fn marks(conn: &mut PgConnection, keys: &[String]) -> Result<HashMap<String, String>, ToolError> {
    let ids: Vec<i64> = keys.iter().map(|k| fnv1a64(&[k])).collect();
    let rows = sqlx::query(
        "SELECT object_key, compacted_into FROM lake_objects WHERE id = ANY($1::int8[]) AND compacted_into IS NOT NULL",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
    .map_err(ToolError::postgres("read compaction marks"))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Which of `keys` some `lake_objects` row points at: compacted files whose compaction committed.
pub async fn committed(conn: &mut PgConnection, keys: &[String]) -> Result<HashSet<String>, ToolError> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = sqlx::query("SELECT DISTINCT compacted_into FROM lake_objects WHERE compacted_into = ANY($1::text[])")
        .bind(keys)
        .fetch_all(conn)
        .await
        .map_err(ToolError::postgres("read committed compactions"))?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// The commit point of one merge, in one transaction: every input is marked as compacted into
/// `target` (its row inserted if the consumer's was pruned), and rows that pointed at an input
/// (earlier compactions merged again now) are moved to `target`, so every mark names a file
/// that exists and holds the row.
///
/// The inputs' visitor filters go with them, and `target_visitors`, when given, becomes the
/// target's (it is not given when the target is a file that already holds every row).
pub async fn commit(
    conn: &mut PgConnection,
    inputs: &[String],
    target: &str,
    target_visitors: Option<&[u8]>,
) -> Result<(), ToolError> {
    let mut tx = sqlx::Connection::begin(conn).await.map_err(ToolError::postgres("begin compaction"))?;
    replace_visitor_filters(&mut tx, inputs, target_visitors.map(|v| (target, v)).as_slice()).await?;
    sqlx::query(
        "INSERT INTO lake_objects (id, object_key, compacted_into)
         SELECT id, key, $3 FROM UNNEST($1::int8[], $2::text[]) AS t(id, key)
         ON CONFLICT (id) DO UPDATE SET compacted_into = EXCLUDED.compacted_into",
    )
    .bind(inputs.iter().map(|k| fnv1a64(&[k])).collect::<Vec<_>>())
    .bind(inputs)
    .bind(target)
    .execute(&mut *tx)
    .await
    .map_err(ToolError::postgres("mark compacted objects"))?;
    sqlx::query("UPDATE lake_objects SET compacted_into = $2 WHERE compacted_into = ANY($1::text[])")
        .bind(inputs)
        .bind(target)
        .execute(&mut *tx)
        .await
        .map_err(ToolError::postgres("move compaction marks"))?;
    tx.commit().await.map_err(ToolError::postgres("commit compaction"))?;
    Ok(())
}

/// Deletes the visitor filters (`lake_object_visitors`, migration 0011) of `gone` and stores
/// `added` (key, filter bytes), in the caller's transaction, which also registers the swap.
pub async fn replace_visitor_filters(
    conn: &mut PgConnection,
    gone: &[String],
    added: &[(&str, &[u8])],
) -> Result<(), ToolError> {
    sqlx::query(
        "WITH gone AS (DELETE FROM lake_object_visitors WHERE id = ANY($1::int8[]))
         INSERT INTO lake_object_visitors (id, object_key, visitors)
         SELECT * FROM UNNEST($2::int8[], $3::text[], $4::bytea[])
         ON CONFLICT (id) DO UPDATE SET visitors = EXCLUDED.visitors, created_at = now()",
    )
    .bind(gone.iter().map(|k| fnv1a64(&[k])).collect::<Vec<_>>())
    .bind(added.iter().map(|(k, _)| fnv1a64(&[k])).collect::<Vec<_>>())
    .bind(added.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>())
    .bind(added.iter().map(|(_, v)| v.to_vec()).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map_err(ToolError::postgres("replace visitor filters"))?;
    Ok(())
}

/// Which of `keys` an erasure rewrote (committed) but did not get to delete: garbage whose rows
/// differ from their replacement on purpose, deleted without comparing.
pub async fn erased_leftovers(conn: &mut PgConnection, keys: &[String]) -> Result<Vec<String>, ToolError> {
    sqlx::query_scalar("SELECT old_key FROM lake_erasures WHERE deleted_at IS NULL AND old_key = ANY($1::text[])")
        .bind(keys)
        .fetch_all(conn)
        .await
        .map_err(ToolError::postgres("read unfinished erasures"))
}

/// Records that the erased objects `keys` are gone.
pub async fn erasures_deleted(conn: &mut PgConnection, keys: &[String]) -> Result<(), ToolError> {
    sqlx::query("UPDATE lake_erasures SET deleted_at = now() WHERE old_key = ANY($1::text[]) AND deleted_at IS NULL")
        .bind(keys)
        .execute(conn)
        .await
        .map_err(ToolError::postgres("record deleted erased objects"))?;
    Ok(())
}
