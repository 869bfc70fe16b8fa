//! In-memory stores with the semantics of the real ones — the lake ([`MemoryLake`]), DynamoDB
//! ([`MemoryItems`]) and the PostgreSQL ledger ([`MemoryLedger`]) — so the batch logic runs in
//! unit tests and the benchmark without any server. Each can be told to fail ([`Faults`]), for
//! partial-failure tests. Deterministic, `Send + Sync`; every call completes without waiting.

use service_kit::KitError;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::aggregate::{Counts, HourKey, TotalKey};
use crate::error::ConsumerError;
use crate::handler::{HandlerSettings, Pipeline};
use crate::ledger::Ledger;
use crate::plan::{Claim, ClaimStatus, LakeObject};
use crate::sinks::dynamo::{CallFailure, DYNAMO_BATCH_MAX_ITEMS, Item, ItemStore};
use crate::sinks::s3::ObjectStore;

/// The message of every injected failure.
pub const INJECTED: &str = "injected failure";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Failures to inject into one operation of an in-memory store.
#[derive(Debug, Default)]
pub struct Faults {
    fail_next: AtomicU32,
    refusing: AtomicBool,
}

impl Faults {
    /// The next `n` calls fail (and change nothing).
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Every call fails while `refusing` is true, as during an outage.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Whether this call fails (using up one of the [`Faults::fail_next`]).
    fn trip(&self) -> bool {
        self.refusing.load(Ordering::SeqCst)
            || self.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

/// One object in [`MemoryLake`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub body: Bytes,
    pub content_type: &'static str,
}

/// The lake as a map from key to object.
#[derive(Debug, Default)]
pub struct MemoryLake {
    objects: Mutex<BTreeMap<String, StoredObject>>,
    puts: Mutex<Vec<String>>,
    /// Failures of `PutObject`.
    pub put_faults: Faults,
    /// Failures of `HeadObject`.
    pub head_faults: Faults,
}

impl MemoryLake {
    /// Every object, by key.
    pub fn objects(&self) -> BTreeMap<String, StoredObject> {
        lock(&self.objects).clone()
    }

    /// Keys starting with `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        lock(&self.objects).keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }

    /// The key of every successful put, in order (overwrites included).
    pub fn puts(&self) -> Vec<String> {
        lock(&self.puts).clone()
    }

    /// Forgets every object and put.
    pub fn clear(&self) {
        lock(&self.objects).clear();
        lock(&self.puts).clear();
    }
}

impl ObjectStore for MemoryLake {
    async fn put(&self, key: &str, body: Bytes, content_type: &'static str) -> Result<(), ConsumerError> {
        if self.put_faults.trip() {
            return Err(KitError::S3 { op: "PutObject", key: key.to_owned(), message: INJECTED.into() }.into());
        }
        lock(&self.objects).insert(key.to_owned(), StoredObject { body, content_type });
        lock(&self.puts).push(key.to_owned());
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, ConsumerError> {
        if self.head_faults.trip() {
            return Err(KitError::S3 { op: "HeadObject", key: key.to_owned(), message: INJECTED.into() }.into());
        }
        Ok(lock(&self.objects).contains_key(key))
    }
}

/// The DynamoDB table as a map keyed by `event_id`, as the real table is: a put overwrites.
#[derive(Debug, Default)]
pub struct MemoryItems {
    items: Mutex<BTreeMap<String, Item>>,
    writes: AtomicUsize,
    /// Failures of whole `BatchWriteItem` calls (not retryable, so the batch fails at once).
    pub faults: Faults,
}

impl MemoryItems {
    /// Every item, by `event_id`.
    pub fn items(&self) -> BTreeMap<String, Item> {
        lock(&self.items).clone()
    }

    /// Items written so far, overwrites included.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// Forgets every item and write.
    pub fn clear(&self) {
        lock(&self.items).clear();
        self.writes.store(0, Ordering::SeqCst);
    }
}

impl ItemStore for MemoryItems {
    async fn write_batch(&self, items: Vec<Item>) -> Result<Vec<Item>, CallFailure> {
        if self.faults.trip() {
            return Err(CallFailure { retryable: false, message: INJECTED.into() });
        }
        if items.len() > DYNAMO_BATCH_MAX_ITEMS {
            return Err(CallFailure { retryable: false, message: format!("{} items in one call", items.len()) });
        }
        let mut keyed = Vec::with_capacity(items.len());
        for item in items {
            let Some(AttributeValue::S(id)) = item.get("event_id") else {
                return Err(CallFailure { retryable: false, message: "an item without a string event_id".into() });
            };
            keyed.push((id.clone(), item));
        }
        self.writes.fetch_add(keyed.len(), Ordering::SeqCst);
        lock(&self.items).extend(keyed);
        Ok(Vec::new())
    }
}

/// A `seen_events` row.
#[derive(Debug, Clone)]
struct Seen {
    owner: i64,
    lake_object: i64,
    claimed_at: DateTime<Utc>,
}

/// A `lake_objects` row.
#[derive(Debug, Clone)]
struct ObjectRow {
    key: String,
    compacted: bool,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct LedgerState {
    seen: foldhash::HashMap<Uuid, Seen>,
    objects: foldhash::HashMap<i64, ObjectRow>,
    /// Everything the counts upsert has added, the site tables' visitors as exact tallies.
    counts: Counts,
    /// How far this ledger's clock is ahead of the wall clock ([`MemoryLedger::advance`]).
    ahead: TimeDelta,
}

impl LedgerState {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.ahead
    }

    /// What `PgLedger::claim`'s statement answers for one claim, inserting it if the ID is new.
    /// A second claim of an ID in the same call is a `Duplicate`, as there.
    fn claim_one(&mut self, c: &Claim, in_this_call: &mut HashSet<Uuid>, now: DateTime<Utc>) -> ClaimStatus {
        if !in_this_call.insert(c.event_id) {
            return ClaimStatus::Duplicate;
        }
        match self.seen.get(&c.event_id) {
            None => {
                self.seen.insert(c.event_id, Seen { owner: c.owner, lake_object: c.lake_object, claimed_at: now });
                ClaimStatus::New
            }
            Some(s) if s.owner == c.owner => {
                let object = self.objects.get(&s.lake_object);
                ClaimStatus::Own {
                    lake_object: s.lake_object,
                    object_key: object.map(|o| o.key.clone()),
                    compacted: object.is_some_and(|o| o.compacted),
                }
            }
            Some(_) => ClaimStatus::Duplicate,
        }
    }

    fn add(&mut self, counts: Counts) {
        self.counts.add(counts);
    }
}

/// The dedup ledger and counts, with `PgLedger`'s semantics: the first claim of an `event_id`
/// wins, the same owner re-claiming gets `Own` with its object, anyone else `Duplicate`; only
/// events inserted now are counted; a claim that fails changes nothing.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    state: Mutex<LedgerState>,
    /// Failures of the claim transaction.
    pub claim_faults: Faults,
    /// Failures of reassignments.
    pub reassign_faults: Faults,
}

impl MemoryLedger {
    /// `event_type_counts`: per (site, event type).
    pub fn counts(&self) -> BTreeMap<TotalKey, i64> {
        lock(&self.state).counts.totals.clone()
    }

    /// `event_type_hourly_counts`: per (site, event type, hour).
    pub fn hourly_counts(&self) -> BTreeMap<HourKey, i64> {
        lock(&self.state).counts.hourly.clone()
    }

    /// Everything added so far, `site_hourly` and `site_daily_pages` included.
    pub fn all_counts(&self) -> Counts {
        lock(&self.state).counts.clone()
    }

    /// How many event IDs are claimed.
    pub fn claimed(&self) -> usize {
        lock(&self.state).seen.len()
    }

    /// The key of the lake object an event is assigned to (None if unclaimed or the object is unknown).
    pub fn object_of(&self, event_id: Uuid) -> Option<String> {
        let state = lock(&self.state);
        state.seen.get(&event_id).and_then(|s| state.objects.get(&s.lake_object)).map(|o| o.key.clone())
    }

    /// Marks an object compacted, as the compactor's commit does (`lake_objects.compacted_into`).
    pub fn mark_compacted(&self, key: &str) {
        for o in lock(&self.state).objects.values_mut().filter(|o| o.key == key) {
            o.compacted = true;
        }
    }

    /// Moves this ledger's clock forward, so that pruning sees its claims as older.
    pub fn advance(&self, by: TimeDelta) {
        lock(&self.state).ahead += by;
    }

    /// Forgets every claim, object and count.
    pub fn clear(&self) {
        *lock(&self.state) = LedgerState::default();
    }
}

impl Ledger for MemoryLedger {
    async fn claim(
        &self,
        claims: &[Claim],
        objects: &[LakeObject],
        count: impl FnOnce(&[usize]) -> Counts + Send,
    ) -> Result<Vec<ClaimStatus>, ConsumerError> {
        if self.claim_faults.trip() {
            return Err(ConsumerError::Postgres {
                step: "claim events",
                source: sqlx::Error::Protocol(INJECTED.into()),
            });
        }
        let mut state = lock(&self.state);
        let now = state.now();
        for o in objects {
            state.objects.entry(o.id).or_insert_with(|| ObjectRow {
                key: o.key.clone(),
                compacted: false,
                created_at: now,
            });
        }
        let mut in_this_call = HashSet::with_capacity(claims.len());
        let statuses: Vec<ClaimStatus> = claims.iter().map(|c| state.claim_one(c, &mut in_this_call, now)).collect();
        let new: Vec<usize> =
            statuses.iter().enumerate().filter(|(_, s)| **s == ClaimStatus::New).map(|(i, _)| i).collect();
        state.add(count(&new));
        Ok(statuses)
    }

    async fn reassign(&self, moves: &[(Uuid, i64)]) -> Result<(), ConsumerError> {
        // As `PgLedger`, which sends no statement for no moves.
        if moves.is_empty() {
            return Ok(());
        }
        if self.reassign_faults.trip() {
            return Err(ConsumerError::Postgres {
                step: "reassign lake objects",
                source: sqlx::Error::Protocol(INJECTED.into()),
            });
        }
        let mut state = lock(&self.state);
        for (event_id, lake_object) in moves {
            if let Some(s) = state.seen.get_mut(event_id) {
                s.lake_object = *lake_object;
            }
        }
        Ok(())
    }

    async fn prune(&self, window_hours: u32) -> Result<u64, ConsumerError> {
        let mut state = lock(&self.state);
        let cutoff = state.now() - TimeDelta::hours(i64::from(window_hours));
        let before = state.seen.len();
        state.seen.retain(|_, s| s.claimed_at >= cutoff);
        let pruned = before - state.seen.len();
        let objects_cutoff = cutoff - TimeDelta::hours(i64::from(window_hours));
        state.objects.retain(|_, o| o.created_at >= objects_cutoff);
        Ok(pruned as u64)
    }

    /// Counts are added to one table at once here: nothing to fold.
    async fn rollup(&self) -> Result<Option<u64>, ConsumerError> {
        Ok(Some(0))
    }

    /// Maps have no planner.
    async fn refresh_statistics(&self) -> Result<bool, ConsumerError> {
        Ok(false)
    }
}

/// The pipeline on in-memory stores.
pub type MemoryPipeline = Pipeline<MemoryLake, MemoryItems, MemoryLedger>;

impl Pipeline<MemoryLake, MemoryItems, MemoryLedger> {
    /// A pipeline on empty in-memory stores.
    pub fn in_memory(settings: HandlerSettings) -> Self {
        Pipeline::new(MemoryLake::default(), MemoryItems::default(), MemoryLedger::default(), settings)
    }

    /// Empties every store (the agent cache stays warm, as in a running process).
    pub fn clear_stores(&self) {
        self.lake.clear();
        self.items.clear();
        self.ledger.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Fact;

    fn claim(event: u128, owner: i64, lake_object: i64) -> Claim {
        Claim { event_id: Uuid::from_u128(event), owner, lake_object }
    }

    fn object(id: i64) -> LakeObject {
        LakeObject { id, key: format!("events/{id}.parquet"), visitors: Vec::new() }
    }

    /// Claims `claims` with objects `objects`, counting each new claim as one `t` event.
    async fn claim_all(ledger: &MemoryLedger, claims: &[Claim], objects: &[LakeObject]) -> Vec<ClaimStatus> {
        let at = Utc::now();
        ledger
            .claim(claims, objects, |new| {
                Counts::of(new.iter().map(|_| Fact {
                    site: Some("s"),
                    event_type: "t",
                    received_at: at,
                    occurred_at: at,
                    visitor: None,
                    url: None,
                    country: None,
                }))
            })
            .await
            .unwrap()
    }

    fn own(lake_object: i64, known: bool) -> ClaimStatus {
        ClaimStatus::Own { lake_object, object_key: known.then(|| object(lake_object).key), compacted: false }
    }

    /// Invariant: the owner rule as `PgLedger` answers it — first claim wins; the same owner
    /// gets `Own` with the object it was assigned (None if the object was never registered);
    /// anyone else, or the same ID twice in one call, gets `Duplicate`; only new claims count.
    #[tokio::test]
    async fn claims_follow_the_owner_rule() {
        let ledger = MemoryLedger::default();
        let first = claim_all(&ledger, &[claim(1, 10, 100), claim(2, 20, 200)], &[object(100)]).await;
        assert_eq!(first, [ClaimStatus::New, ClaimStatus::New]);
        let cases = [
            (claim(1, 10, 101), own(100, true)),
            (claim(2, 20, 100), own(200, false)),
            (claim(1, 11, 100), ClaimStatus::Duplicate),
            (claim(3, 30, 100), ClaimStatus::New),
        ];
        let claims: Vec<_> = cases.iter().map(|(c, _)| c.clone()).chain([claim(3, 31, 100)]).collect();
        let statuses = claim_all(&ledger, &claims, &[object(101)]).await;
        let expected: Vec<_> = cases.iter().map(|(_, s)| s.clone()).chain([ClaimStatus::Duplicate]).collect();
        assert_eq!(statuses, expected);
        assert_eq!(ledger.counts(), BTreeMap::from([(("s".to_owned(), "t".to_owned()), 3)]));
        assert_eq!(ledger.object_of(Uuid::from_u128(1)).as_deref(), Some("events/100.parquet"));
    }

    /// Invariant: a claim that fails claims and counts nothing; reassignment and compaction
    /// change what a later `Own` says.
    #[tokio::test]
    async fn failed_claims_change_nothing_and_reassignment_moves_the_object() {
        let ledger = MemoryLedger::default();
        ledger.claim_faults.fail_next(1);
        let failed = ledger.claim(&[claim(1, 10, 100)], &[object(100)], |_| unreachable!()).await;
        assert!(failed.is_err());
        assert_eq!((ledger.claimed(), ledger.counts().len()), (0, 0));
        claim_all(&ledger, &[claim(1, 10, 100)], &[object(100), object(101)]).await;
        ledger.reassign(&[(Uuid::from_u128(1), 101)]).await.unwrap();
        assert_eq!(claim_all(&ledger, &[claim(1, 10, 100)], &[]).await, [own(101, true)]);
        ledger.mark_compacted(&object(101).key);
        let compacted = ClaimStatus::Own { lake_object: 101, object_key: Some(object(101).key), compacted: true };
        assert_eq!(claim_all(&ledger, &[claim(1, 10, 100)], &[]).await, [compacted]);
    }

    /// Invariant: pruning forgets claims older than the window, by claim time; an ID claimed
    /// again afterwards is new.
    #[tokio::test]
    async fn prune_forgets_claims_older_than_the_window() {
        let ledger = MemoryLedger::default();
        claim_all(&ledger, &[claim(1, 10, 100)], &[object(100)]).await;
        ledger.advance(TimeDelta::hours(23));
        claim_all(&ledger, &[claim(2, 20, 100)], &[]).await;
        assert_eq!(ledger.prune(24).await.unwrap(), 0);
        ledger.advance(TimeDelta::hours(2));
        assert_eq!(ledger.prune(24).await.unwrap(), 1);
        assert_eq!(
            claim_all(&ledger, &[claim(1, 10, 100), claim(2, 99, 100)], &[]).await,
            [ClaimStatus::New, ClaimStatus::Duplicate]
        );
    }

    /// Invariant: injected faults fail exactly the calls asked for, and a refusing store fails
    /// until it stops refusing.
    #[tokio::test]
    async fn faults_fail_the_next_calls_or_refuse() {
        let lake = MemoryLake::default();
        lake.put_faults.fail_next(2);
        let mut outcomes = Vec::new();
        for _ in 0..3 {
            outcomes.push(lake.put("k", Bytes::from_static(b"x"), "text/plain").await.is_ok());
        }
        assert_eq!(outcomes, [false, false, true]);
        lake.put_faults.refuse(true);
        assert!(lake.put("k", Bytes::new(), "text/plain").await.is_err());
        lake.put_faults.refuse(false);
        assert!(lake.put("k", Bytes::new(), "text/plain").await.is_ok());
        assert_eq!(lake.puts().len(), 2);
    }
}
