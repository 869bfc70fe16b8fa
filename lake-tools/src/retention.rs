//! Retention, enforced: deletes what has outlived its store's retention — lake and dead-letter hour partitions, expired DynamoDB items, old PostgreSQL rows.
//!
//! On AWS the lake's S3 lifecycle rules and DynamoDB's TTL do this by themselves; this is the
//! local stack's stand-in (moto applies no lifecycle, dynalite never expires an item), and it
//! works against AWS too. Each step is idempotent, so a run stopped anywhere is finished by the
//! next, and a second run over the same data deletes nothing more:
//!
//! - **lake** (`events/`): each expired hour is deleted under the compactor's advisory lock for
//!   that hour (`compact::store::lock_partition`), so retention never deletes under a
//!   compaction or an erasure rewriting the same hour (an hour someone holds is left for the
//!   next run). The hour's rows in `lake_object_visitors` go first, then the objects: a crash
//!   between the two leaves objects without an index row, which erasure reads whole (correct,
//!   only slower) and the next run deletes. Hours are found in S3 and in the index, so index
//!   rows whose objects are already gone (an S3 lifecycle rule deletes objects without telling
//!   PostgreSQL) are deleted too.
//! - **dead-letter** (`dead-letter/`): expired hours deleted, with no lock (nothing rewrites them).
//! - **DynamoDB**: a Scan for `expires_at < now` (what TTL would delete), deleted 25 at a time
//!   with `BatchWriteItem`, unprocessed keys retried with backoff (the consumer's write style).
//! - **PostgreSQL**: the ledger's own pruning, and completed erasure requests past their
//!   retention. Aggregates are anonymous counts and stay.

pub mod plan;
pub mod store;

use chrono::{DateTime, Utc};
use schemas::lake::{DEAD_LETTER_PREFIX, EVENTS_PREFIX, Partition};
use serde::Serialize;
use service_kit::postgres::Database;

use crate::ToolError;
use crate::compact;
use crate::items::{EventItems, ItemKey};
use plan::Retention;
use store::LakePrefixes;

/// What one run deleted, per store.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Expired `events/` hours whose objects were deleted.
    pub lake_partitions: usize,
    pub lake_objects: usize,
    /// `lake_object_visitors` rows of expired hours (of those objects, or of objects already gone).
    pub lake_index_rows: u64,
    /// Expired hours someone else held the lock of (compaction, erasure): left for the next run.
    pub lake_partitions_locked: Vec<String>,
    pub dead_letter_partitions: usize,
    pub dead_letter_objects: usize,
    pub dynamo_items: u64,
    pub ledger_claims: u64,
    pub erasure_audit_rows: u64,
    /// Steps that failed, with their error; the others still ran.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The stores retention deletes from, and how long each keeps data.
pub struct RetentionRun {
    pub lake: LakePrefixes,
    /// `None`: no DynamoDB table configured, nothing to expire there.
    pub items: Option<EventItems>,
    pub db: Database,
    pub retention: Retention,
}

impl RetentionRun {
    /// One pass over every store at `now`. A failing step is reported and the others still run.
    pub async fn run(&self, now: DateTime<Utc>) -> RetentionReport {
        let mut report = RetentionReport::default();
        let steps: [(&str, Result<(), ToolError>); 4] = [
            ("lake", self.lake_step(now, &mut report).await),
            ("dead-letter", self.dead_letter_step(now, &mut report).await),
            ("dynamodb", self.dynamo_step(now, &mut report).await),
            ("postgres", self.postgres_step(now, &mut report).await),
        ];
        for (step, result) in steps {
            if let Err(e) = result {
                tracing::error!(step, error = %e, "retention step failed");
                report.errors.push(format!("{step}: {e}"));
            }
        }
        report
    }

    /// The expired hour partitions under `root` at `cutoff`: days are listed first, and only the
    /// days that began before the cutoff are listed hour by hour.
    async fn expired(&self, root: &str, cutoff: DateTime<Utc>) -> Result<Vec<Partition>, ToolError> {
        let mut hours = Vec::new();
        for day in self.lake.children(&format!("{root}/")).await? {
            if plan::day_of_prefix(root, &day).is_some_and(|d| plan::day_may_be_expired(d, cutoff)) {
                hours.extend(self.lake.children(&day).await?);
            }
        }
        Ok(plan::expired_partitions(root, &hours, cutoff))
    }

    async fn lake_step(&self, now: DateTime<Utc>, report: &mut RetentionReport) -> Result<(), ToolError> {
        let Some(cutoff) = plan::cutoff(now, self.retention.lake_days) else { return Ok(()) };
        let mut partitions = self.expired(EVENTS_PREFIX, cutoff).await?;
        // Keys sort by partition (fixed-width dt and hour), so every index row of an expired hour
        // sorts before the prefix of the hour the cutoff falls in.
        let bound = plan::partition_prefix(EVENTS_PREFIX, &Partition::of(cutoff));
        let indexed = store::indexed_prefixes_before(self.db.pool(), &bound).await?;
        partitions.extend(plan::expired_partitions(EVENTS_PREFIX, &indexed, cutoff));
        partitions.sort();
        partitions.dedup();
        for p in partitions {
            let Some(mut conn) = compact::store::lock_partition(self.db.pool(), &p).await? else {
                tracing::info!(partition = %p.path(), "partition locked by a compactor or forget; left for the next run");
                report.lake_partitions_locked.push(p.path());
                continue;
            };
            let prefix = plan::partition_prefix(EVENTS_PREFIX, &p);
            let keys = self.lake.keys(&prefix).await?;
            report.lake_index_rows += store::delete_object_index(&mut conn, &prefix, &keys).await?;
            self.lake.delete(&keys).await?;
            report.lake_partitions += usize::from(!keys.is_empty());
            report.lake_objects += keys.len();
            tracing::info!(partition = %p.path(), objects = keys.len(), "expired lake partition deleted");
            // `conn` drops here and is closed, releasing the lock.
        }
        Ok(())
    }

    async fn dead_letter_step(&self, now: DateTime<Utc>, report: &mut RetentionReport) -> Result<(), ToolError> {
        let Some(cutoff) = plan::cutoff(now, self.retention.dead_letter_days) else { return Ok(()) };
        for p in self.expired(DEAD_LETTER_PREFIX, cutoff).await? {
            let keys = self.lake.keys(&plan::partition_prefix(DEAD_LETTER_PREFIX, &p)).await?;
            self.lake.delete(&keys).await?;
            report.dead_letter_partitions += 1;
            report.dead_letter_objects += keys.len();
        }
        Ok(())
    }

    async fn dynamo_step(&self, now: DateTime<Utc>, report: &mut RetentionReport) -> Result<(), ToolError> {
        let Some(items) = &self.items else { return Ok(()) };
        let mut start = None;
        loop {
            let (page, next) = items.expired_page(now, start).await?;
            // The Scan's filter already chose them; the same rule again, in code we test, so a
            // store that ignored the filter could not make us delete a live item.
            let keys: Vec<ItemKey> = page
                .into_iter()
                .filter(|(_, expires)| plan::item_expired(expires.as_deref(), now))
                .map(|(key, _)| key)
                .collect();
            report.dynamo_items += items.delete(keys).await?;
            match next {
                Some(k) => start = Some(k),
                None => return Ok(()),
            }
        }
    }

    async fn postgres_step(&self, now: DateTime<Utc>, report: &mut RetentionReport) -> Result<(), ToolError> {
        let window = chrono::Duration::hours(i64::from(self.retention.dedup_window_hours));
        report.ledger_claims += store::prune_ledger(self.db.pool(), now - window, window).await?;
        if let Some(cutoff) = plan::cutoff(now, self.retention.erasure_audit_days) {
            report.erasure_audit_rows += store::prune_erasure_audit(self.db.pool(), cutoff).await?;
        }
        Ok(())
    }
}
