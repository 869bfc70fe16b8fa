//! Retention's I/O: listing and deleting lake partitions in S3, and the PostgreSQL deletes.
//!
//! The only I/O of retention besides the events table (`crate::items`): `plan.rs` decides,
//! `retention.rs` sequences.

use chrono::{DateTime, Utc};
use schemas::lake::fnv1a64;
use service_kit::KitError;
use service_kit::s3::Bucket;
use sqlx::{PgConnection, PgPool};

use crate::ToolError;

/// The lake bucket, as retention uses it: partitions are found by listing common prefixes, so
/// a run reads one listing page per day of the lake and lists objects only of expired hours.
#[derive(Clone)]
pub struct LakePrefixes {
    client: aws_sdk_s3::Client,
    bucket: Bucket,
}

impl LakePrefixes {
    pub fn new(client: aws_sdk_s3::Client, bucket: String) -> Self {
        LakePrefixes { bucket: Bucket::new(client.clone(), bucket), client }
    }

    /// The common prefixes one level below `prefix` (which ends in `/`).
    pub async fn children(&self, prefix: &str) -> Result<Vec<String>, ToolError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(self.bucket.name())
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| KitError::S3 {
                op: "ListObjectsV2",
                key: prefix.to_owned(),
                message: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            })?;
            out.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_owned)));
        }
        Ok(out)
    }

    /// Every key under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, ToolError> {
        Ok(self.bucket.list(prefix).await?.into_iter().map(|(key, _)| key).collect())
    }

    /// Deletes `keys` (a missing key is not an error, so a re-run after a crash is harmless).
    pub async fn delete(&self, keys: &[String]) -> Result<(), ToolError> {
        Ok(self.bucket.delete(keys).await?)
    }
}

/// Deletes the visitor-index rows (`lake_object_visitors`, migration 0011) of every object under
/// the partition `prefix` — those of `keys`, listed now, and any whose object is already gone —
/// on the connection that holds the partition's lock. Returns how many there were.
pub async fn delete_object_index(conn: &mut PgConnection, prefix: &str, keys: &[String]) -> Result<u64, ToolError> {
    let ids: Vec<i64> = keys.iter().map(|k| fnv1a64(&[k])).collect();
    let done =
        sqlx::query("DELETE FROM lake_object_visitors WHERE id = ANY($1::int8[]) OR starts_with(object_key, $2)")
            .bind(ids)
            .bind(prefix)
            .execute(conn)
            .await
            .map_err(ToolError::postgres("delete lake_object_visitors rows"))?;
    Ok(done.rows_affected())
}

/// The partition prefixes (`events/dt=…/hour=…/`) of visitor-index rows whose key sorts before
/// `bound`: index rows of partitions S3 no longer lists (their objects expired by a lifecycle
/// rule, or a run stopped between deleting rows and objects) are found here.
pub async fn indexed_prefixes_before(pool: &PgPool, bound: &str) -> Result<Vec<String>, ToolError> {
    sqlx::query_scalar(
        "SELECT DISTINCT substr(object_key, 1, length(object_key) - length(regexp_replace(object_key, '^.*/', '')))
         FROM lake_object_visitors WHERE object_key < $1",
    )
    .bind(bound)
    .fetch_all(pool)
    .await
    .map_err(ToolError::postgres("list indexed partitions"))
}

/// Deletes completed erasure requests (their audit rows) completed before `cutoff`. A pending
/// request is never deleted, however old: it is work still owed.
pub async fn prune_erasure_audit(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<u64, ToolError> {
    let done = sqlx::query("DELETE FROM erasure_requests WHERE completed_at IS NOT NULL AND completed_at < $1")
        .bind(cutoff)
        .execute(pool)
        .await
        .map_err(ToolError::postgres("prune erasure_requests"))?;
    Ok(done.rows_affected())
}

/// The consumer's own ledger pruning (`PgLedger::prune`: `ledger_prune`, migration 0008, drops
/// the days that ended before `cutoff`; `lake_objects` rows go after twice the window), run
/// here too because the consumer prunes only inside a batch: an idle pipeline never would.
/// Returns how many claims were forgotten (PostgreSQL's estimate for large partitions).
pub async fn prune_ledger(pool: &PgPool, cutoff: DateTime<Utc>, window: chrono::Duration) -> Result<u64, ToolError> {
    let forgotten: i64 = sqlx::query_scalar("SELECT ledger_prune($1)")
        .bind(cutoff)
        .fetch_one(pool)
        .await
        .map_err(ToolError::postgres("prune seen_events"))?;
    sqlx::query("DELETE FROM lake_objects WHERE created_at < $1")
        .bind(cutoff - window)
        .execute(pool)
        .await
        .map_err(ToolError::postgres("prune lake_objects"))?;
    Ok(u64::try_from(forgotten).unwrap_or(0))
}
