//! Pure compaction decisions: which hours are closed, which objects of an hour to delete, merge or keep, and what they merge into.
//!
//! Everything here takes a listing (keys and sizes) and what PostgreSQL said about it, and
//! returns data; `compact.rs` does the I/O in the order ARCHITECTURE.md ("Compaction") requires.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, DurationRound, Utc};
use schemas::lake::{EVENTS_PREFIX, Partition, fnv1a64};

/// File-name prefix of compacted objects. Micro-batch objects start with the shard ID
/// (`shardId-…`), so the two kinds can never be confused.
pub const COMPACTED_PREFIX: &str = "compacted-";
/// A compacted file at least this large is left alone when stragglers arrive: rewriting it to
/// add a few rows would cost more than the extra file costs Athena (its guidance: >= 64 MB).
pub const MIN_FINAL_BYTES: u64 = 64 * 1024 * 1024;
/// Input bytes merged into one output file. Bounds the compactor's memory (the compressed
/// inputs are held, plus ~250 bytes per row: about 1.1 GB at this size, bench/RESULTS.md) and
/// keeps outputs near Athena's 128 MB–1 GB sweet spot; balanced splitting makes every output
/// at least half of this.
pub const DEFAULT_CHUNK_INPUT_BYTES: u64 = 256 * 1024 * 1024;
/// How many closed hours an hourly run looks at. Listing an empty hour is one cheap request,
/// and this covers every straggler a consumer can still write: Kinesis keeps records 24 h.
pub const DEFAULT_HOURS_BACK: u32 = 24;
/// An hour is compacted only this long after it ended, so the batches in flight at the top of
/// the hour (received before, written after) have landed; later stragglers are merged next run.
pub const CLOSE_GRACE_MINUTES: i64 = 10;

/// Limits of one compaction run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Input bytes merged into one output file.
    pub chunk_input_bytes: u64,
    /// Compacted files at least this large are kept as they are.
    pub min_final_bytes: u64,
}

impl Limits {
    /// Limits for chunks of `chunk_input_bytes`. A balanced chunk holds at least half of that,
    /// and sorting shrinks it a little, so outputs of a full run stay above a quarter of it:
    /// files that large are kept, and re-running after a multi-file run is a no-op.
    pub fn with_chunk_bytes(chunk_input_bytes: u64) -> Self {
        let chunk_input_bytes = chunk_input_bytes.max(1);
        Limits { chunk_input_bytes, min_final_bytes: MIN_FINAL_BYTES.min(chunk_input_bytes / 4) }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::with_chunk_bytes(DEFAULT_CHUNK_INPUT_BYTES)
    }
}

/// One object of a partition listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// `events/dt=…/hour=…/`: the prefix of one hour partition.
pub fn partition_prefix(p: &Partition) -> String {
    format!("{EVENTS_PREFIX}/{}/", p.path())
}

/// Whether the hour has ended (plus [`CLOSE_GRACE_MINUTES`]) at `now`.
pub fn is_closed(p: &Partition, now: DateTime<Utc>) -> bool {
    p.hour_start() + Duration::hours(1) + Duration::minutes(CLOSE_GRACE_MINUTES) <= now
}

/// The `hours_back` most recent closed hours at `now`, newest first (the hour that just closed
/// is the one with work; older ones only get stragglers).
pub fn closed_hours(now: DateTime<Utc>, hours_back: u32) -> Vec<Partition> {
    let shifted = now - Duration::minutes(CLOSE_GRACE_MINUTES);
    let Ok(end) = shifted.duration_trunc(Duration::hours(1)) else { return Vec::new() };
    (1..=i64::from(hours_back)).map(|i| Partition::of(end - Duration::hours(i))).collect()
}

/// The `hours_back` most recent hours at `now`, the open one (`now`'s) included, newest first:
/// what `compactor --include-open` compacts.
pub fn recent_hours(now: DateTime<Utc>, hours_back: u32) -> Vec<Partition> {
    (0..i64::from(hours_back)).map(|i| Partition::of(now - Duration::hours(i))).collect()
}

/// The part of a key after the last `/`.
pub fn file_name(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, name)| name)
}

/// Whether the compactor wrote this object.
pub fn is_compacted(key: &str) -> bool {
    file_name(key).starts_with(COMPACTED_PREFIX)
}

/// The data files of a listing: `.parquet` objects whose names do not start with `_` or `.`
/// (Athena and Hive skip those too, so nothing else is ever read or deleted).
pub fn data_files(listing: Vec<ObjectInfo>) -> Vec<ObjectInfo> {
    let mut files: Vec<ObjectInfo> = listing
        .into_iter()
        .filter(|o| {
            let name = file_name(&o.key);
            name.ends_with(".parquet") && !name.starts_with('_') && !name.starts_with('.')
        })
        .collect();
    files.sort();
    files
}

/// The deterministic name of the file `inputs` merge into: a hash of their sorted keys, so a
/// run repeated over the same inputs (after a crash) overwrites its own earlier output.
pub fn compacted_key(prefix: &str, inputs: &[ObjectInfo]) -> String {
    let mut keys: Vec<&str> = inputs.iter().map(|o| o.key.as_str()).collect();
    keys.sort_unstable();
    format!("{prefix}{COMPACTED_PREFIX}{:016x}.parquet", fnv1a64(&keys) as u64)
}

/// Objects marked as compacted into a file that still exists, with that file: what a run that
/// stopped between committing its marks and deleting its inputs leaves behind. `marks` maps an
/// object key to its `lake_objects.compacted_into`.
pub fn leftovers(files: &[ObjectInfo], marks: &HashMap<String, String>) -> Vec<(String, String)> {
    let present: HashSet<&str> = files.iter().map(|o| o.key.as_str()).collect();
    files
        .iter()
        .filter_map(|o| {
            let target = marks.get(&o.key)?;
            (target != &o.key && present.contains(target.as_str())).then(|| (o.key.clone(), target.clone()))
        })
        .collect()
}

/// One output file and the objects merged into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub inputs: Vec<ObjectInfo>,
    pub output: String,
}

/// What to do with one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    /// Compacted files that stay as they are; their event IDs seed the deduplication.
    pub keep: Vec<ObjectInfo>,
    /// Merges, in order. Empty: nothing to do.
    pub chunks: Vec<Chunk>,
}

/// Plans one partition. `files` are its data files (leftovers already removed); `committed`
/// holds the compacted files some `lake_objects` row points at (their compaction committed).
///
/// Every file is an input except committed compacted files of at least `min_final_bytes`.
/// A compacted file nobody points at is the output of a run that stopped before committing:
/// its rows are all still in its inputs, so it is either overwritten (when the same inputs
/// produce the same name again) or merged like any other input; deduplication by `event_id`
/// makes both safe.
pub fn plan_partition(
    prefix: &str,
    files: &[ObjectInfo],
    committed: &HashSet<String>,
    limits: &Limits,
) -> PartitionPlan {
    let (keep, inputs): (Vec<ObjectInfo>, Vec<ObjectInfo>) = files
        .iter()
        .cloned()
        .partition(|o| is_compacted(&o.key) && committed.contains(&o.key) && o.size >= limits.min_final_bytes);
    let micro = inputs.iter().filter(|o| !is_compacted(&o.key)).count();
    // One file cannot become fewer, and a lone compacted file with no micro-batch files beside it
    // is already the result: re-running must be a no-op.
    if files.len() <= 1 || (micro == 0 && inputs.len() <= 1) {
        return PartitionPlan { keep: files.to_vec(), chunks: Vec::new() };
    }
    let orphans: HashSet<&str> =
        inputs.iter().filter(|o| is_compacted(&o.key) && !committed.contains(&o.key)).map(|o| o.key.as_str()).collect();
    if !orphans.is_empty() {
        let rest: Vec<ObjectInfo> = inputs.iter().filter(|o| !orphans.contains(o.key.as_str())).cloned().collect();
        let chunks = chunk(prefix, &rest, limits);
        if !rest.is_empty() && orphans.iter().all(|o| chunks.iter().any(|c| c.output == *o)) {
            return PartitionPlan { keep, chunks };
        }
    }
    PartitionPlan { chunks: chunk(prefix, &inputs, limits), keep }
}

/// Splits sorted inputs into `n = ceil(total / chunk_input_bytes)` chunks of about `total / n`
/// bytes each (a chunk overshoots by less than one input file), so no output is much smaller
/// than the others.
pub fn chunk(prefix: &str, inputs: &[ObjectInfo], limits: &Limits) -> Vec<Chunk> {
    let total: u128 = inputs.iter().map(|o| u128::from(o.size)).sum();
    let n = total.div_ceil(u128::from(limits.chunk_input_bytes.max(1))).max(1);
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut cumulative: u128 = 0;
    for o in inputs {
        current.push(o.clone());
        cumulative += u128::from(o.size);
        // Close the k-th chunk once the running total passes k/n of the whole.
        let k = chunks.len() as u128 + 1;
        if k < n && cumulative * n >= total * k {
            chunks.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks.into_iter().map(|inputs| Chunk { output: compacted_key(prefix, &inputs), inputs }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "events/dt=2024-05-01/hour=10/";

    fn obj(name: &str, size: u64) -> ObjectInfo {
        ObjectInfo { key: format!("{P}{name}"), size }
    }

    fn small() -> Limits {
        Limits { chunk_input_bytes: 100, min_final_bytes: 50 }
    }

    #[test]
    fn closed_hours_skip_the_current_hour_and_the_grace_period() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let hours = closed_hours(at("2024-05-01T11:05:00Z"), 2);
        assert_eq!(
            hours.iter().map(|p| p.path()).collect::<Vec<_>>(),
            ["dt=2024-05-01/hour=09", "dt=2024-05-01/hour=08"]
        );
        let hours = closed_hours(at("2024-05-01T11:15:00Z"), 1);
        assert_eq!(hours[0].path(), "dt=2024-05-01/hour=10");
        assert!(is_closed(&hours[0], at("2024-05-01T11:10:00Z")));
        assert!(!is_closed(&hours[0], at("2024-05-01T11:09:59Z")));
        let midnight = closed_hours(at("2024-05-02T00:30:00Z"), 1);
        assert_eq!(midnight[0].path(), "dt=2024-05-01/hour=23");
    }

    #[test]
    fn recent_hours_start_with_the_open_one() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let hours = recent_hours(at("2024-05-02T00:05:00Z"), 3);
        assert_eq!(
            hours.iter().map(|p| p.path()).collect::<Vec<_>>(),
            ["dt=2024-05-02/hour=00", "dt=2024-05-01/hour=23", "dt=2024-05-01/hour=22"]
        );
        assert!(recent_hours(at("2024-05-02T00:05:00Z"), 0).is_empty());
    }

    #[test]
    fn data_files_ignore_hidden_and_foreign_objects() {
        let files =
            data_files(vec![obj("b.parquet", 1), obj("_SUCCESS", 1), obj(".tmp.parquet", 1), obj("a.parquet", 1)]);
        assert_eq!(files, [obj("a.parquet", 1), obj("b.parquet", 1)]);
    }

    /// Invariant: the output name depends only on the set of inputs, so a repeated run overwrites its own output.
    #[test]
    fn compacted_key_is_deterministic_and_order_free() {
        let a = compacted_key(P, &[obj("x.parquet", 1), obj("y.parquet", 2)]);
        let b = compacted_key(P, &[obj("y.parquet", 9), obj("x.parquet", 9)]);
        assert_eq!(a, b);
        assert!(a.starts_with(&format!("{P}{COMPACTED_PREFIX}")) && a.ends_with(".parquet"), "{a}");
        assert_ne!(a, compacted_key(P, &[obj("x.parquet", 1)]));
        assert!(is_compacted(&a) && !is_compacted(&format!("{P}shardId-000000000000-1-2.parquet")));
    }

    /// Invariant: only objects whose rows are committed to an existing compacted file are leftovers.
    #[test]
    fn leftovers_need_an_existing_target() {
        let files = [obj("a.parquet", 1), obj("b.parquet", 1), obj("compacted-1.parquet", 5)];
        let marks = HashMap::from([
            (files[0].key.clone(), files[2].key.clone()),
            (files[1].key.clone(), format!("{P}compacted-gone.parquet")),
        ]);
        assert_eq!(leftovers(&files, &marks), [(files[0].key.clone(), files[2].key.clone())]);
    }

    /// Invariant: a compacted hour is left alone (re-running is a no-op).
    #[test]
    fn compacted_hour_is_a_noop() {
        let one = [obj("compacted-1.parquet", 10)];
        assert!(plan_partition(P, &one, &HashSet::new(), &small()).chunks.is_empty());
        let big = [obj("compacted-1.parquet", 60), obj("compacted-2.parquet", 70)];
        let committed: HashSet<String> = big.iter().map(|o| o.key.clone()).collect();
        let plan = plan_partition(P, &big, &committed, &small());
        assert!(plan.chunks.is_empty());
        assert_eq!(plan.keep.len(), 2);
        assert!(plan_partition(P, &[obj("a.parquet", 1)], &HashSet::new(), &small()).chunks.is_empty());
    }

    #[test]
    fn micro_batches_merge_with_small_compacted_files_and_stragglers_join_big_ones() {
        let files = [obj("a.parquet", 10), obj("b.parquet", 10), obj("compacted-1.parquet", 20)];
        let committed = HashSet::from([files[2].key.clone()]);
        let plan = plan_partition(P, &files, &committed, &small());
        assert_eq!(plan.chunks.len(), 1);
        assert_eq!(plan.chunks[0].inputs.len(), 3, "the small compacted file is merged too");
        let files = [obj("a.parquet", 10), obj("compacted-1.parquet", 60)];
        let committed = HashSet::from([files[1].key.clone()]);
        let plan = plan_partition(P, &files, &committed, &small());
        assert_eq!(plan.keep, [files[1].clone()]);
        assert_eq!(plan.chunks[0].inputs, [files[0].clone()], "deduplicated against the kept file");
    }

    /// Invariant: after a crash between writing and committing, the same inputs overwrite the orphan.
    #[test]
    fn orphan_of_the_same_inputs_is_overwritten_not_merged() {
        let micro = [obj("a.parquet", 10), obj("b.parquet", 10)];
        let orphan = ObjectInfo { key: compacted_key(P, &micro), size: 18 };
        let mut files = micro.to_vec();
        files.push(orphan.clone());
        files.sort();
        let plan = plan_partition(P, &files, &HashSet::new(), &small());
        assert_eq!(plan.chunks.len(), 1);
        assert_eq!(plan.chunks[0].output, orphan.key);
        assert_eq!(plan.chunks[0].inputs, micro);
        // A straggler arrived meanwhile: the orphan is merged like any input instead.
        files.push(obj("c.parquet", 10));
        files.sort();
        let plan = plan_partition(P, &files, &HashSet::new(), &small());
        assert_eq!(plan.chunks[0].inputs.len(), 4);
    }

    #[test]
    fn default_limits_keep_files_of_64_mib() {
        assert_eq!(Limits::default().min_final_bytes, MIN_FINAL_BYTES);
        assert_eq!(Limits::with_chunk_bytes(8 << 20).min_final_bytes, 2 << 20);
    }

    #[test]
    fn chunks_are_balanced_and_bounded() {
        let inputs: Vec<ObjectInfo> = (0..10).map(|i| obj(&format!("{i:02}.parquet"), 30)).collect();
        let chunks = chunk(P, &inputs, &small());
        let sizes: Vec<u64> = chunks.iter().map(|c| c.inputs.iter().map(|o| o.size).sum()).collect();
        assert_eq!(sizes, [120, 90, 90]);
        assert_eq!(chunks.iter().map(|c| c.inputs.len()).sum::<usize>(), 10);
        assert_eq!(chunk(P, &inputs[..2], &small()).len(), 1);
        assert!(chunk(P, &[], &small()).is_empty());
    }
}
