//! Compaction of closed hour partitions: many micro-batch files into a few large sorted ones, crash-safe and idempotent.
//!
//! One partition, under a PostgreSQL advisory lock (one compactor per hour at a time):
//! 1. list the hour's data files and read their `lake_objects` marks;
//! 2. finish what an earlier run left: an object marked `compacted_into` a file that exists is
//!    deleted once its event IDs are confirmed in that file;
//! 3. plan (pure, `plan.rs`): every file is an input except large committed compacted files;
//! 4. per chunk: merge (pure, `rewrite.rs`: sorted, duplicates dropped), **write** the output
//!    under a name derived from the input keys, **commit** — one transaction marks every input
//!    `compacted_into` the output — and only then **delete** the inputs.
//!
//! The commit is the only point that matters. Before it, the output is an unreferenced copy
//! whose rows all still exist in the inputs; a re-run overwrites it (same inputs, same name) or
//! merges it (deduplicating). After it, the inputs are garbage a re-run deletes, and the
//! consumer treats redelivered events of those inputs as already in the lake (`plan.rs`,
//! `ClaimStatus::Own { compacted: true }`). See athena/README.md for what queries see meanwhile.

pub mod plan;
pub mod rewrite;
pub mod store;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use schemas::lake::Partition;
use schemas::visitors::VisitorFilter;
use serde::Serialize;
use service_kit::postgres::Database;
use sqlx::PgConnection;

use crate::ToolError;
use plan::{Chunk, Limits, ObjectInfo};
use rewrite::Seen;
use store::LakeFiles;

/// Where a run stops on purpose, for crash tests: the lake and the ledger are left exactly as a
/// process killed at that point leaves them. `chunk` counts from 0. Only a build with the
/// `crash-points` feature (the crash tests') can ask for one; in any other build every check is
/// the constant `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// The chunk's output is written; nothing is committed.
    AfterWrite { chunk: usize },
    /// The chunk's inputs are marked; none is deleted.
    AfterCommit { chunk: usize },
    /// Half of the chunk's inputs are deleted.
    MidDelete { chunk: usize },
}

/// The crash point a run was asked to stop at (always none without `crash-points`). Forget's
/// runs stop at the same points, `chunk` counting the partitions they rewrite.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StopAt {
    #[cfg(feature = "crash-points")]
    pub(crate) halt: Option<Halt>,
}

impl StopAt {
    #[inline(always)]
    pub(crate) fn at(self, point: Halt) -> bool {
        #[cfg(feature = "crash-points")]
        {
            self.halt == Some(point)
        }
        #[cfg(not(feature = "crash-points"))]
        {
            let _ = point;
            false
        }
    }
}

/// What one partition's compaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    pub partition: String,
    pub files_before: usize,
    pub bytes_before: u64,
    pub files_after: usize,
    pub bytes_after: u64,
    /// Inputs of an earlier run deleted now (it stopped after committing).
    pub leftovers_deleted: usize,
    /// Output files written.
    pub outputs: usize,
    pub inputs_compacted: usize,
    pub rows_in: usize,
    pub rows_out: usize,
    pub duplicates_dropped: usize,
    /// Another compactor held the partition's lock; nothing was done.
    pub skipped_locked: bool,
    /// Stopped by a [`Halt`].
    pub halted: bool,
    /// Set when this partition failed (by [`Compactor::compact_hours`], which goes on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The state of one locked run that every chunk adds to: which files hold which event IDs.
struct Placed {
    /// Keys of the files that hold rows, indexed by the holder numbers in `seen`.
    holders: Vec<String>,
    seen: Seen,
}

/// The compactor: the lake, the database that holds the marks and locks, and the limits.
pub struct Compactor {
    pub files: LakeFiles,
    pub db: Database,
    pub limits: Limits,
}

impl Compactor {
    pub fn new(files: LakeFiles, db: Database, limits: Limits) -> Self {
        Compactor { files, db, limits }
    }

    /// Compacts the `hours_back` latest closed hours at `now`, newest first. A failing partition
    /// is reported (and logged) and the others still run; the next run retries it.
    pub async fn compact_hours(&self, now: DateTime<Utc>, hours_back: u32) -> Vec<PartitionReport> {
        self.compact_each(plan::closed_hours(now, hours_back)).await
    }

    /// Compacts each of `partitions` in turn (the caller decided they may be compacted); a
    /// failing partition is reported and logged, and the others still run.
    pub async fn compact_each(&self, partitions: impl IntoIterator<Item = Partition>) -> Vec<PartitionReport> {
        let mut reports = Vec::new();
        for p in partitions {
            let report = match self.compact_partition(&p).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(partition = %p.path(), error = %e, "compaction failed");
                    PartitionReport { partition: p.path(), error: Some(e.to_string()), ..Default::default() }
                }
            };
            reports.push(report);
        }
        reports
    }

    /// Compacts one partition (which the caller has checked is closed).
    pub async fn compact_partition(&self, p: &Partition) -> Result<PartitionReport, ToolError> {
        self.compact_partition_stopping(p, StopAt::default()).await
    }

    /// [`Self::compact_partition`], stopping at `halt` (the crash tests simulate kills with it).
    #[cfg(feature = "crash-points")]
    pub async fn compact_partition_halting(
        &self,
        p: &Partition,
        halt: Option<Halt>,
    ) -> Result<PartitionReport, ToolError> {
        self.compact_partition_stopping(p, StopAt { halt }).await
    }

    async fn compact_partition_stopping(&self, p: &Partition, stop: StopAt) -> Result<PartitionReport, ToolError> {
        let prefix = plan::partition_prefix(p);
        let files = plan::data_files(self.files.list(&prefix).await?);
        let mut report = PartitionReport {
            partition: p.path(),
            files_before: files.len(),
            bytes_before: files.iter().map(|o| o.size).sum(),
            ..Default::default()
        };
        if files.len() <= 1 {
            // Nothing to merge and nothing left over (a leftover needs its target beside it).
            report.files_after = report.files_before;
            report.bytes_after = report.bytes_before;
            return Ok(report);
        }
        // A secret rotated since start-up: read it again and log in anew, once.
        let locked = self
            .db
            .retry_refused_login(
                || store::lock_partition(self.db.pool(), p),
                |e| match e {
                    ToolError::Postgres { source, .. } => Some(source),
                    _ => None,
                },
            )
            .await;
        let Some(mut conn) = locked? else {
            tracing::info!(partition = %p.path(), "another compactor holds this partition; skipped");
            report.skipped_locked = true;
            return Ok(report);
        };
        self.run_locked(&mut conn, &prefix, files, stop, &mut report).await?;
        if !report.halted {
            let after = plan::data_files(self.files.list(&prefix).await?);
            report.files_after = after.len();
            report.bytes_after = after.iter().map(|o| o.size).sum();
        }
        let line = serde_json::to_string(&report).unwrap_or_default();
        tracing::info!(partition = %report.partition, report = %line, "partition compacted");
        Ok(report)
        // `conn` drops here and is closed, releasing the lock.
    }

    /// Steps 2–4 of the module doc, under the partition's lock.
    async fn run_locked(
        &self,
        conn: &mut PgConnection,
        prefix: &str,
        mut files: Vec<ObjectInfo>,
        stop: StopAt,
        report: &mut PartitionReport,
    ) -> Result<(), ToolError> {
        let keys: Vec<String> = files.iter().map(|o| o.key.clone()).collect();
        // An erasure that stopped before deleting what it rewrote: finish it first, so those
        // rows can never be merged back (their replacement lacks them on purpose).
        let erased = store::erased_leftovers(conn, &keys).await?;
        if !erased.is_empty() {
            self.files.delete(&erased).await?;
            store::erasures_deleted(conn, &erased).await?;
            report.leftovers_deleted += erased.len();
            files.retain(|o| !erased.contains(&o.key));
        }
        let keys: Vec<String> = files.iter().map(|o| o.key.clone()).collect();
        let marks = store::marks(conn, &keys).await?;
        let deleted = self.finish_leftovers(&files, &marks).await?;
        report.leftovers_deleted += deleted.len();
        files.retain(|o| !deleted.contains(&o.key));

        // 3. Plan.
        let compacted: Vec<String> =
            files.iter().filter(|o| plan::is_compacted(&o.key)).map(|o| o.key.clone()).collect();
        let committed = store::committed(conn, &compacted).await?;
        let plan = plan::plan_partition(prefix, &files, &committed, &self.limits);
        if plan.chunks.is_empty() {
            return Ok(());
        }
        let mut placed = self.seed(&plan.keep).await?;
        for (n, chunk) in plan.chunks.iter().enumerate() {
            self.compact_chunk(conn, n, chunk, &mut placed, stop, report).await?;
            if report.halted {
                break;
            }
        }
        Ok(())
    }

    /// Step 2: deletes the inputs of a run that committed but did not finish deleting, and
    /// returns their keys. Their rows are in the target by construction (the mark is committed
    /// after the target is written); the check guards against a consumer retry that raced a
    /// deletion and rewrote an object.
    async fn finish_leftovers(
        &self,
        files: &[ObjectInfo],
        marks: &HashMap<String, String>,
    ) -> Result<Vec<String>, ToolError> {
        let leftovers = plan::leftovers(files, marks);
        if leftovers.is_empty() {
            return Ok(Vec::new());
        }
        let mut confirmed = Vec::new();
        let mut targets: HashMap<&str, HashSet<u128>> = HashMap::new();
        for (key, target) in &leftovers {
            if !targets.contains_key(target.as_str()) {
                let ids = rewrite::event_ids(target, self.files.get(target).await?)?;
                targets.insert(target, ids.into_iter().collect());
            }
            let in_target = &targets[target.as_str()];
            if rewrite::event_ids(key, self.files.get(key).await?)?.iter().all(|id| in_target.contains(id)) {
                confirmed.push(key.clone());
            } else {
                tracing::warn!(key, target, "object marked compacted has rows its target lacks; merging it again");
            }
        }
        self.files.delete(&confirmed).await?;
        Ok(confirmed)
    }

    /// Files that stay seed the deduplication, so a straggler cannot repeat their rows.
    async fn seed(&self, keep: &[ObjectInfo]) -> Result<Placed, ToolError> {
        let mut placed = Placed { holders: Vec::new(), seen: Seen::new() };
        for file in keep {
            let index = placed.holders.len();
            placed.holders.push(file.key.clone());
            for id in rewrite::event_ids(&file.key, self.files.get(&file.key).await?)? {
                placed.seen.entry(id).or_insert(index);
            }
        }
        Ok(placed)
    }

    /// Step 4 for chunk `n`: write, commit, delete — in this order.
    async fn compact_chunk(
        &self,
        conn: &mut PgConnection,
        n: usize,
        chunk: &Chunk,
        placed: &mut Placed,
        stop: StopAt,
        report: &mut PartitionReport,
    ) -> Result<(), ToolError> {
        let input_keys: Vec<String> = chunk.inputs.iter().map(|o| o.key.clone()).collect();
        let (target, visitors) = self.write_output(chunk, &input_keys, placed, report).await?;
        if stop.at(Halt::AfterWrite { chunk: n }) {
            report.halted = true;
            return Ok(());
        }
        store::commit(conn, &input_keys, &target, visitors.as_deref()).await?;
        tracing::info!(output = %target, inputs = input_keys.len(), "chunk committed");
        if stop.at(Halt::AfterCommit { chunk: n }) {
            report.halted = true;
            return Ok(());
        }
        if stop.at(Halt::MidDelete { chunk: n }) {
            self.files.delete(&input_keys[..input_keys.len() / 2]).await?;
            report.halted = true;
            return Ok(());
        }
        self.files.delete(&input_keys).await?;
        report.inputs_compacted += input_keys.len();
        tracing::info!(output = %target, inputs = input_keys.len(), "chunk inputs deleted");
        Ok(())
    }

    /// Merges the chunk's inputs and writes the output; returns the key that now holds their
    /// rows (the output, or — when every row was already placed — the file holding them) and
    /// the visitor filter of the output it wrote.
    async fn write_output(
        &self,
        chunk: &Chunk,
        input_keys: &[String],
        placed: &mut Placed,
        report: &mut PartitionReport,
    ) -> Result<(String, Option<Vec<u8>>), ToolError> {
        let sources = self.files.get_all(input_keys).await?;
        let holder = placed.holders.len();
        placed.holders.push(chunk.output.clone());
        // Merging is CPU work of seconds: off the async threads.
        let mut seen = std::mem::take(&mut placed.seen);
        let (merged, back) = tokio::task::spawn_blocking(move || {
            let merged = rewrite::merge(sources, &mut seen, holder);
            (merged, seen)
        })
        .await
        .map_err(|e| ToolError::Parquet { key: chunk.output.clone(), message: format!("merge task failed: {e}") })?;
        placed.seen = back;
        let merged = merged?;
        report.rows_in += merged.rows_in;
        report.rows_out += merged.rows_out;
        report.duplicates_dropped += merged.duplicates;
        Ok(match merged.body {
            Some(body) => {
                let bytes = body.len();
                self.files.put(&chunk.output, body).await?;
                report.outputs += 1;
                tracing::info!(output = %chunk.output, inputs = input_keys.len(), rows = merged.rows_out, bytes, "chunk written");
                (chunk.output.clone(), Some(VisitorFilter::of(&merged.visitors).into_bytes()))
            }
            // Every row is already in a file that stays or was just written: point there.
            None => (
                merged.duplicate_holder.map(|h| placed.holders[h].clone()).unwrap_or_else(|| chunk.output.clone()),
                None,
            ),
        })
    }
}
