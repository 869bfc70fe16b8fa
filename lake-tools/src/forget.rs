//! Erasure of visitors (GDPR Art. 17, CCPA): pending requests processed in batches, DynamoDB items deleted, lake objects rewritten without their rows, crash-safe and idempotent.
//!
//! One run, holding forget's advisory lock (one run at a time):
//! 1. finish what a stopped run committed: delete the objects it rewrote (`lake_erasures`);
//! 2. take the pending requests (up to `store::REQUESTS_PER_RUN`);
//! 3. list the events, read the visitor filters (`lake_object_visitors`), and read only the
//!    objects whose filter may hold a requested visitor (and those without a filter). Per
//!    partition, under the compactor's lock for it, every such object holding rows of the
//!    visitors is **written** again without them under a new name; the DynamoDB items of the
//!    erased rows are deleted by key (the table is keyed by event ID, so the lake is the
//!    visitor index of both stores and the table needs none); one transaction **commits** every
//!    swap of the partition (marks, swap log, filters, the requests' counts); and only then are
//!    the old objects **deleted** — the compactor's order and Halt points. So each affected
//!    partition is rewritten once per run however many requests it has;
//! 4. when every partition is done, the requests complete: the raw ID is dropped, the audit
//!    (hash, counts, times) stays.
//!
//! The items go before the commit: until it, the old objects still name the rows, so a run
//! stopped in between finds the same rows again and deletes their items again (idempotent).
//!
//! Between write and delete both objects are in the lake, as during a compaction: queries count
//! `DISTINCT event_id`, so they see the old object's rows until it is deleted and the new one's
//! after — per object, the old set or the new, never neither (the new is written first) and,
//! once the run ends, never both.

pub mod plan;
pub mod store;

use std::collections::{BTreeMap, HashMap, HashSet};

use schemas::dynamo::PARTITION_KEY;
use schemas::lake::EVENTS_PREFIX;
use schemas::visitors::{IdKind, VisitorFilter};
use serde::Serialize;
use service_kit::postgres::Database;

use crate::ToolError;
use crate::compact::rewrite::{self, Seen};
use crate::compact::store::{LakeFiles, erasures_deleted, lock_partition};
use crate::compact::{Halt, StopAt};
use crate::items::{EventItems, event_key};
use plan::{Candidate, Request};
use store::{Removal, Swap};

/// What one run did (printed as one JSON line).
#[derive(Debug, Default, Clone, Serialize)]
pub struct RunReport {
    /// Pending requests this run took on.
    pub requests: usize,
    /// Requests it completed.
    pub completed: Vec<i64>,
    pub dynamo_items_removed: u64,
    pub lake_rows_removed: u64,
    pub lake_objects_rewritten: u64,
    /// Objects read because their filter may hold a visitor, or they had none.
    pub objects_read: usize,
    /// Objects without a filter that got one now.
    pub objects_indexed: usize,
    /// Partitions with an object rewritten.
    pub partitions_rewritten: usize,
    /// Objects of an earlier, stopped run deleted now.
    pub leftovers_deleted: usize,
    /// Partitions a compactor held; their requests stay pending for the next run.
    pub partitions_skipped: Vec<String>,
    /// Another forget run held the lock: nothing was done.
    pub skipped_locked: bool,
    /// Stopped by a [`Halt`] (crash tests).
    pub halted: bool,
    pub errors: Vec<String>,
}

/// What became of one candidate object.
enum Erased {
    /// It holds no row of the visitors (a filter's false positive, or an unfiltered object);
    /// `filter` is its new filter when it had none.
    Clean { filter: Option<Vec<u8>> },
    /// It was written again without them: the swap to commit, and the erased rows (event ID,
    /// the wanted visitor hashes it matched).
    Rewritten { swap: Swap, matched: Vec<(u128, Vec<i64>)> },
}

/// The visitors of one run: each hash with the requests that name it.
struct Wanted {
    hashes: HashSet<i64>,
    by_hash: HashMap<i64, Vec<i64>>,
    ids: Vec<i64>,
}

/// Forget: the lake, the events table and the database of requests, filters and locks.
pub struct Forgetter {
    pub files: LakeFiles,
    pub items: EventItems,
    pub db: Database,
}

impl Forgetter {
    pub fn new(files: LakeFiles, items: EventItems, db: Database) -> Self {
        Forgetter { files, items, db }
    }

    /// Records a request for the visitor (`site`, `kind`, `id`); returns its ID and whether it
    /// is new (a pending request for the same visitor is returned instead of a second one).
    pub async fn request(&self, site: &str, kind: IdKind, id: &str) -> Result<(i64, bool), ToolError> {
        store::record(self.db.pool(), site, kind, id).await
    }

    /// Processes the pending requests (steps 1–5 of the module doc).
    pub async fn run(&self) -> Result<RunReport, ToolError> {
        self.run_stopping(StopAt::default()).await
    }

    /// [`Self::run`], stopping at `halt` in the `chunk`-th partition it rewrites.
    #[cfg(feature = "crash-points")]
    pub async fn run_halting(&self, halt: Option<Halt>) -> Result<RunReport, ToolError> {
        self.run_stopping(StopAt { halt }).await
    }

    async fn run_stopping(&self, stop: StopAt) -> Result<RunReport, ToolError> {
        let mut report = RunReport::default();
        let Some(mut conn) = store::lock_run(self.db.pool()).await? else {
            tracing::info!("another forget run holds the lock; nothing done");
            report.skipped_locked = true;
            return Ok(report);
        };
        // 1. A stopped run's committed swaps.
        let unfinished = store::unfinished(&mut conn).await?;
        if !unfinished.is_empty() {
            self.files.delete(&unfinished).await?;
            erasures_deleted(&mut conn, &unfinished).await?;
            report.leftovers_deleted = unfinished.len();
        }
        // 2.
        let requests = store::pending(&mut conn).await?;
        report.requests = requests.len();
        if requests.is_empty() {
            return Ok(report);
        }
        // 3. The lake and the events table, partition by partition.
        let wanted = wanted(&requests);
        let listing = self.files.list(&format!("{EVENTS_PREFIX}/")).await?;
        let filters = store::filters(&mut conn).await?;
        let hashes: Vec<i64> = wanted.hashes.iter().copied().collect();
        let partitions = plan::candidates(listing, &filters, &hashes);
        let mut rewritten = 0;
        for prefix in partitions.keys() {
            match self.erase_partition(prefix, &wanted, rewritten, stop, &mut report).await {
                Ok(true) => rewritten += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(partition = %prefix, error = %e, "erasure failed in a partition");
                    report.errors.push(format!("{prefix}: {e}"));
                }
            }
            if report.halted {
                return Ok(report);
            }
        }
        report.partitions_rewritten = rewritten;
        // 4.
        if report.errors.is_empty() && report.partitions_skipped.is_empty() {
            store::complete(&mut conn, &wanted.ids).await?;
            report.completed = wanted.ids.clone();
        }
        let line = serde_json::to_string(&report).unwrap_or_default();
        tracing::info!(report = %line, "forget run done");
        Ok(report)
    }

    /// Step 3 for one partition; returns whether it rewrote an object. The candidates are found
    /// again under the lock: a compactor may have merged the ones listed before it.
    async fn erase_partition(
        &self,
        prefix: &str,
        wanted: &Wanted,
        n: usize,
        stop: StopAt,
        report: &mut RunReport,
    ) -> Result<bool, ToolError> {
        let partition = plan::partition_of(prefix)
            .ok_or_else(|| ToolError::Parquet { key: prefix.to_owned(), message: "not an hour partition".into() })?;
        let Some(mut conn) = lock_partition(self.db.pool(), &partition).await? else {
            tracing::info!(partition = %prefix, "a compactor holds this partition; left for the next run");
            report.partitions_skipped.push(prefix.to_owned());
            return Ok(false);
        };
        let listing = self.files.list(prefix).await?;
        let keys: Vec<String> = listing.iter().map(|o| o.key.clone()).collect();
        let filters = store::filters_of(&mut conn, &keys).await?;
        let hashes: Vec<i64> = wanted.hashes.iter().copied().collect();
        let candidates: Vec<Candidate> = plan::candidates(listing, &filters, &hashes).into_values().flatten().collect();
        let mut swaps: Vec<Swap> = Vec::new();
        let mut removals: BTreeMap<i64, Removal> = BTreeMap::new();
        let mut erased: Vec<(u128, Vec<i64>)> = Vec::new();
        let mut indexed: Vec<(String, Vec<u8>)> = Vec::new();
        for candidate in &candidates {
            report.objects_read += 1;
            match self.erase_object(candidate, wanted).await? {
                Erased::Clean { filter: Some(filter) } => indexed.push((candidate.object.key.clone(), filter)),
                Erased::Clean { filter: None } => {}
                Erased::Rewritten { swap, matched } => {
                    for (request, rows) in plan::removed_per_request(&matched, &wanted.by_hash) {
                        let r = removals.entry(request).or_insert(Removal { request, ..Default::default() });
                        r.rows += rows;
                        r.objects += 1;
                    }
                    erased.extend(matched);
                    swaps.push(swap);
                }
            }
        }
        store::add_filters(&mut conn, &indexed).await?;
        report.objects_indexed += indexed.len();
        if swaps.is_empty() {
            return Ok(false);
        }
        if stop.at(Halt::AfterWrite { chunk: n }) {
            report.halted = true;
            return Ok(true);
        }
        for (request, items) in self.erase_items(&erased, wanted).await? {
            removals.entry(request).or_insert(Removal { request, ..Default::default() }).items += items;
        }
        let removals: Vec<Removal> = removals.into_values().collect();
        store::commit_partition(&mut conn, &swaps, &removals).await?;
        report.lake_rows_removed += removals.iter().map(|r| r.rows).sum::<u64>();
        report.dynamo_items_removed += removals.iter().map(|r| r.items).sum::<u64>();
        report.lake_objects_rewritten += swaps.len() as u64;
        tracing::info!(partition = %prefix, objects = swaps.len(), "erasure committed");
        if stop.at(Halt::AfterCommit { chunk: n }) {
            report.halted = true;
            return Ok(true);
        }
        let old: Vec<String> = swaps.into_iter().map(|s| s.old).collect();
        if stop.at(Halt::MidDelete { chunk: n }) {
            self.files.delete(&old[..old.len() / 2]).await?;
            report.halted = true;
            return Ok(true);
        }
        self.files.delete(&old).await?;
        erasures_deleted(&mut conn, &old).await?;
        Ok(true)
    }

    /// Reads one candidate and, when it holds rows of the wanted visitors, writes it again
    /// without them (or not at all, when no row stays).
    async fn erase_object(&self, candidate: &Candidate, wanted: &Wanted) -> Result<Erased, ToolError> {
        let key = candidate.object.key.clone();
        let body = self.files.get(&key).await?;
        let task_failed =
            |e: tokio::task::JoinError| ToolError::Parquet { key: key.clone(), message: format!("task failed: {e}") };
        let (hashes, k) = (wanted.hashes.clone(), key.clone());
        // Reading and rewriting are CPU work: off the async threads.
        let (found, body) =
            tokio::task::spawn_blocking(move || (rewrite::visitor_rows(&k, body.clone(), &hashes), body))
                .await
                .map_err(task_failed)?;
        let found = found?;
        if found.matched.is_empty() {
            let filter = (!candidate.indexed).then(|| VisitorFilter::of(&found.visitors).into_bytes());
            return Ok(Erased::Clean { filter });
        }
        let requests: Vec<i64> = plan::removed_per_request(&found.matched, &wanted.by_hash).into_keys().collect();
        // The erased rows count as already placed, so the merge leaves them out.
        let mut seen: Seen = found.matched.iter().map(|(id, _)| (*id, usize::MAX)).collect();
        let k = key.clone();
        let merged = tokio::task::spawn_blocking(move || rewrite::merge(vec![(k, body)], &mut seen, 0))
            .await
            .map_err(task_failed)??;
        let swap = match merged.body {
            Some(out) => {
                let new = plan::erased_key(&key, &requests);
                self.files.put(&new, out).await?;
                Swap { old: key, new: Some(new), visitors: Some(VisitorFilter::of(&merged.visitors).into_bytes()) }
            }
            None => Swap { old: key, new: None, visitors: None },
        };
        Ok(Erased::Rewritten { swap, matched: found.matched })
    }

    /// Deletes the DynamoDB items of the erased rows; returns, per request, how many of its
    /// rows still had an item (one expired by TTL has none).
    async fn erase_items(&self, erased: &[(u128, Vec<i64>)], wanted: &Wanted) -> Result<BTreeMap<i64, u64>, ToolError> {
        let keys = erased.iter().map(|(id, _)| event_key(*id)).collect();
        let existing = self.items.existing(keys).await?;
        let present: HashSet<String> =
            existing.iter().filter_map(|k| k.get(PARTITION_KEY)?.as_s().ok().cloned()).collect();
        self.items.delete(existing).await?;
        let with_item: Vec<(u128, Vec<i64>)> = erased
            .iter()
            .filter(|(id, _)| present.contains(&uuid::Uuid::from_u128(*id).to_string()))
            .cloned()
            .collect();
        Ok(plan::removed_per_request(&with_item, &wanted.by_hash))
    }

    /// The audit: every request, newest first.
    pub async fn status(&self) -> Result<Vec<store::AuditRow>, ToolError> {
        store::audit(self.db.pool()).await
    }

    /// The forget connection, for tests that look at the database as a run left it.
    pub fn database(&self) -> &Database {
        &self.db
    }
}

fn wanted(requests: &[Request]) -> Wanted {
    let mut by_hash: HashMap<i64, Vec<i64>> = HashMap::new();
    for r in requests {
        by_hash.entry(r.hash()).or_default().push(r.id);
    }
    Wanted { hashes: by_hash.keys().copied().collect(), by_hash, ids: requests.iter().map(|r| r.id).collect() }
}
