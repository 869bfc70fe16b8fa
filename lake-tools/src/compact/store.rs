//! The compactor's I/O: listing, reading, writing and deleting lake objects in S3, and the compaction marks and lock in PostgreSQL.
//!
//! The only I/O of compaction: `plan.rs` and `rewrite.rs` are pure and unit-tested with fixtures.

use std::collections::{HashMap, HashSet};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use schemas::lake::{Partition, fnv1a64};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Row};

use crate::ToolError;
use crate::compact::plan::ObjectInfo;

/// Objects fetched at once when reading a chunk's inputs.
const GET_CONCURRENCY: usize = 8;
/// Most keys in one `DeleteObjects` call (S3 limit).
const DELETE_MAX_KEYS: usize = 1000;

fn s3_error(op: &'static str, key: &str, e: impl std::error::Error) -> ToolError {
    ToolError::S3 { op, key: key.to_owned(), message: aws_sdk_s3::error::DisplayErrorContext(e).to_string() }
}

/// The lake bucket, as the compactor uses it.
#[derive(Clone)]
pub struct LakeFiles {
    client: Client,
    bucket: String,
}

impl LakeFiles {
    pub fn new(client: Client, bucket: String) -> Self {
        LakeFiles { client, bucket }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Every object under `prefix`, with its size.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ToolError> {
        let mut out = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("ListObjectsV2", prefix, e))?;
            out.extend(page.contents().iter().filter_map(|o| {
                Some(ObjectInfo { key: o.key()?.to_owned(), size: o.size().unwrap_or(0).max(0) as u64 })
            }));
        }
        Ok(out)
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, ToolError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("GetObject", key, e))?;
        let body = out.body.collect().await.map_err(|e| s3_error("GetObject", key, e))?;
        Ok(body.into_bytes())
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
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/vnd.apache.parquet")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_error("PutObject", key, e))?;
        Ok(())
    }

    /// Deletes `keys` (a missing key is not an error: deleting is idempotent, as a re-run needs).
    pub async fn delete(&self, keys: &[String]) -> Result<(), ToolError> {
        for batch in keys.chunks(DELETE_MAX_KEYS) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| s3_error("DeleteObjects", &batch[0], e))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| s3_error("DeleteObjects", &batch[0], e))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| s3_error("DeleteObjects", &batch[0], e))?;
            if let Some(failed) = out.errors().first() {
                return Err(ToolError::S3 {
                    op: "DeleteObjects",
                    key: failed.key().unwrap_or_default().to_owned(),
                    message: format!(
                        "{} ({} keys not deleted)",
                        failed.message().unwrap_or_default(),
                        out.errors().len()
                    ),
                });
            }
        }
        Ok(())
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
pub async fn commit(conn: &mut PgConnection, inputs: &[String], target: &str) -> Result<(), ToolError> {
    let mut tx = sqlx::Connection::begin(conn).await.map_err(ToolError::postgres("begin compaction"))?;
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
