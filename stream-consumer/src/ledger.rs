//! The batch's view of the dedup ledger and counts: claim, reassign, prune, roll up, analyze.
//!
//! PostgreSQL implements it (`sinks::postgres::PgLedger`), and memory does in unit tests and the
//! benchmark (`in_memory::MemoryLedger`), with the same semantics: see ARCHITECTURE.md,
//! "Exactly once".

use std::future::Future;

use uuid::Uuid;

use crate::aggregate::Counts;
use crate::error::ConsumerError;
use crate::plan::{Claim, ClaimStatus, LakeObject};

/// What the handler needs from the ledger.
pub trait Ledger: Send + Sync + 'static {
    /// Atomically: registers the lake objects, claims every event (the first claim of an
    /// `event_id` wins and makes its record the owner), and adds `count(new)` — the counts of the
    /// claims inserted just now, by index — to the totals and hourly counts. Returns one status
    /// per claim: `New` if inserted now, `Own` if the same owner claimed it before, `Duplicate`
    /// otherwise. On error nothing is claimed or counted.
    fn claim(
        &self,
        claims: &[Claim],
        objects: &[LakeObject],
        count: impl FnOnce(&[usize]) -> Counts + Send,
    ) -> impl Future<Output = Result<Vec<ClaimStatus>, ConsumerError>> + Send;

    /// Moves events (`event_id`, lake object id) whose earlier lake object never landed to this
    /// attempt's object.
    fn reassign(&self, moves: &[(Uuid, i64)]) -> impl Future<Output = Result<(), ConsumerError>> + Send;

    /// Forgets claims made longer ago than the dedup window (and lake objects older than twice
    /// it); returns how many claims were forgotten.
    fn prune(&self, window_hours: u32) -> impl Future<Output = Result<u64, ConsumerError>> + Send;

    /// Folds the counts that claims added as per-batch rows into their rolled-up rows, where
    /// the store keeps them apart (PostgreSQL, migration 0009); readers see the same figures
    /// before and after. Returns how many rows it folded, or `None` when another process is
    /// rolling up at the moment.
    fn rollup(&self) -> impl Future<Output = Result<Option<u64>, ConsumerError>> + Send;

    /// Refreshes the store's query-planner statistics of the ledger when it has grown enough
    /// since they were taken (PostgreSQL, migration 0010: without them the claim's lookup scans
    /// the day's whole partition). Returns whether it refreshed them.
    fn refresh_statistics(&self) -> impl Future<Output = Result<bool, ConsumerError>> + Send;
}
