//! The exactly-once decisions, as pure functions: claims to make, and what to write once the ledger has answered.
//!
//! See ARCHITECTURE.md, "Exactly once". In short: the first stream record that carries an
//! `event_id` owns it (PostgreSQL `seen_events`, first claim wins). A retry of that record is
//! recognised as the owner again, so the answer to "is this event mine to write?" is the same on
//! every attempt; an event owned by another record is a client retry and is dropped.

use std::collections::{BTreeMap, HashMap, HashSet};

use schemas::lake::{Partition, events_object_key, fnv1a64};
use schemas::visitors::{VisitorFilter, event_visitors};
use uuid::Uuid;

use crate::decode::DecodedEvent;

/// One row to insert into `seen_events` (kept if the ID is new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub event_id: Uuid,
    /// Hash of the owning record's shard and sequence number.
    pub owner: i64,
    /// Hash of the lake object this attempt writes the event to.
    pub lake_object: i64,
}

/// A lake object this attempt may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeObject {
    pub id: i64,
    pub key: String,
    /// The stored Bloom filter of the visitors of every event assigned to it
    /// (`schemas::visitors`): a superset of the rows it will hold, which is all erasure needs.
    pub visitors: Vec<u8>,
}

/// What the ledger said about one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimStatus {
    /// Inserted now: first time this `event_id` is seen.
    New,
    /// Already claimed by this same record (a redelivery). `object_key` is where an earlier
    /// attempt assigned it (None if that object is unknown to the ledger); `compacted` is true
    /// once the compactor has rewritten that object's rows elsewhere, or forget has rewritten it
    /// without an erased visitor's rows (its rows must not come back either).
    Own { lake_object: i64, object_key: Option<String>, compacted: bool },
    /// Claimed by another record: a client retry within the dedup window.
    Duplicate,
}

/// Claims and lake objects for one batch; `first_seq`/`last_seq` span the whole batch.
pub fn plan_claims(events: &[DecodedEvent<'_>], first_seq: &str, last_seq: &str) -> (Vec<Claim>, Vec<LakeObject>) {
    let mut objects: BTreeMap<String, (i64, Vec<i64>)> = BTreeMap::new();
    let claims = events
        .iter()
        .map(|d| {
            let key = object_key_for(d, first_seq, last_seq);
            let (lake_object, visitors) = objects.entry(key).or_insert_with_key(|k| (fnv1a64(&[k]), Vec::new()));
            let e = &d.event;
            visitors.extend(
                event_visitors(e.site.as_deref(), e.anonymous_id.as_deref(), e.user_id.as_deref())
                    .into_iter()
                    .flatten(),
            );
            Claim { event_id: e.event_id, owner: fnv1a64(&[d.shard_id, d.sequence_number]), lake_object: *lake_object }
        })
        .collect();
    let objects = objects
        .into_iter()
        .map(|(key, (id, visitors))| LakeObject { id, key, visitors: VisitorFilter::of(&visitors).into_bytes() })
        .collect();
    (claims, objects)
}

/// The lake object key an event goes to in this attempt.
pub fn object_key_for(d: &DecodedEvent<'_>, first_seq: &str, last_seq: &str) -> String {
    events_object_key(&Partition::of(d.event.received_at), d.shard_id, first_seq, last_seq)
}

/// Keys of objects that earlier attempts assigned some of our events to; the caller checks
/// whether each exists before [`resolve`].
pub fn objects_to_check(claims: &[Claim], statuses: &[ClaimStatus]) -> Vec<String> {
    let mut keys: Vec<String> = claims
        .iter()
        .zip(statuses)
        .filter_map(|(c, s)| match s {
            ClaimStatus::Own { lake_object, object_key: Some(k), compacted: false }
                if *lake_object != c.lake_object =>
            {
                Some(k.clone())
            }
            _ => None,
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// What to write for one batch, by index into the decoded events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WritePlan {
    /// Lake object key → events to write in it (every event assigned to that object).
    pub lake: BTreeMap<String, Vec<usize>>,
    /// Events to (re)write in DynamoDB: every event this batch owns (puts are idempotent).
    pub dynamo: Vec<usize>,
    /// Events claimed for the first time: the ones counted in PostgreSQL and in metrics.
    pub new: Vec<usize>,
    /// Events dropped as client retries of an event owned by another record.
    pub duplicates: usize,
    /// Events whose earlier object never landed: reassign them to this attempt's object.
    pub reassign: Vec<(Uuid, i64)>,
}

/// Decides what to write. `existing` holds the keys (from [`objects_to_check`]) that exist in
/// the lake: events already in one of those are not written again.
pub fn resolve(
    events: &[DecodedEvent<'_>],
    claims: &[Claim],
    statuses: &[ClaimStatus],
    existing: &HashSet<String>,
    first_seq: &str,
    last_seq: &str,
) -> WritePlan {
    let mut plan = WritePlan::default();
    let mut keys: HashMap<i64, String> = HashMap::new();
    for (i, ((d, c), s)) in events.iter().zip(claims).zip(statuses).enumerate() {
        let in_lake_elsewhere = match s {
            ClaimStatus::Duplicate => {
                plan.duplicates += 1;
                continue;
            }
            ClaimStatus::New => {
                plan.new.push(i);
                false
            }
            // Compacted: the rows live in a compacted object now; writing them again would
            // duplicate them, whatever range this delivery has.
            ClaimStatus::Own { compacted: true, .. } => true,
            ClaimStatus::Own { lake_object, .. } if *lake_object == c.lake_object => false,
            ClaimStatus::Own { object_key: Some(k), .. } if existing.contains(k) => true,
            ClaimStatus::Own { .. } => {
                plan.reassign.push((c.event_id, c.lake_object));
                false
            }
        };
        plan.dynamo.push(i);
        if !in_lake_elsewhere {
            let key = keys.entry(c.lake_object).or_insert_with(|| object_key_for(d, first_seq, last_seq)).clone();
            plan.lake.entry(key).or_default().push(i);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_batch;
    use crate::testing::event_record;

    /// Events decoded from `n` fresh records (leaked: a few per test, and the events borrow them).
    /// Every claim found owned by this batch, its events assigned to `key`.
    fn owned(claims: &[Claim], key: &str, compacted: bool) -> Vec<ClaimStatus> {
        claims
            .iter()
            .map(|c| ClaimStatus::Own { lake_object: c.lake_object, object_key: Some(key.to_owned()), compacted })
            .collect()
    }

    fn decoded(n: usize) -> Vec<DecodedEvent<'static>> {
        let records: Vec<_> = (1..=n).map(|i| event_record(&i.to_string(), "a", None)).collect();
        decode_batch(records.leak()).events
    }

    /// Invariant: a first delivery writes everything and counts everything.
    #[test]
    fn first_delivery_writes_all() {
        let ev = decoded(3);
        let (claims, objects) = plan_claims(&ev, "1", "3");
        assert_eq!(objects.len(), 1);
        // The object's visitor filter holds the events' visitors.
        let filter = schemas::visitors::VisitorFilter::from_bytes(objects[0].visitors.clone()).unwrap();
        for d in &ev {
            let [anonymous, _] = event_visitors(d.event.site.as_deref(), d.event.anonymous_id.as_deref(), None);
            assert!(filter.may_contain(anonymous.unwrap()));
        }
        let plan = resolve(&ev, &claims, &vec![ClaimStatus::New; 3], &HashSet::new(), "1", "3");
        assert_eq!(plan.new, [0, 1, 2]);
        assert_eq!(plan.lake.values().next().unwrap(), &[0, 1, 2]);
        assert!(plan.reassign.is_empty());
    }

    /// Invariant: an identical redelivery rewrites the same object, counts nothing again.
    #[test]
    fn identical_redelivery_counts_nothing_and_rewrites_same_object() {
        let ev = decoded(2);
        let (claims, objects) = plan_claims(&ev, "1", "2");
        let own = owned(&claims, &objects[0].key, false);
        let plan = resolve(&ev, &claims, &own, &HashSet::new(), "1", "2");
        assert!(plan.new.is_empty());
        assert_eq!(plan.lake.keys().next().unwrap(), &objects[0].key);
        assert_eq!(plan.dynamo, [0, 1]);
    }

    /// Invariant: a suffix redelivered after its first object landed is not written twice to the lake.
    #[test]
    fn suffix_redelivery_skips_events_already_in_an_existing_object() {
        let ev = decoded(4);
        let (first_claims, first_objects) = plan_claims(&ev, "1", "4");
        let suffix = &ev[2..];
        let (claims, _) = plan_claims(suffix, "3", "4");
        let statuses: Vec<_> = first_claims[2..]
            .iter()
            .map(|c| ClaimStatus::Own {
                lake_object: c.lake_object,
                object_key: Some(first_objects[0].key.clone()),
                compacted: false,
            })
            .collect();
        let to_check = objects_to_check(&claims, &statuses);
        assert_eq!(to_check, [first_objects[0].key.clone()]);
        let exists: HashSet<String> = to_check.iter().cloned().collect();
        let plan = resolve(suffix, &claims, &statuses, &exists, "3", "4");
        assert!(plan.lake.is_empty(), "already in the lake");
        assert_eq!(plan.dynamo, [0, 1]);
        // If the first object never landed, the suffix takes the events over.
        let plan = resolve(suffix, &claims, &statuses, &HashSet::new(), "3", "4");
        assert_eq!(plan.lake.values().next().unwrap(), &[0, 1]);
        assert_eq!(plan.reassign.len(), 2);
    }

    /// Invariant: after compaction a redelivered batch writes nothing to the lake, even with the same range.
    #[test]
    fn redelivery_after_compaction_skips_the_lake() {
        let ev = decoded(2);
        let (claims, objects) = plan_claims(&ev, "1", "2");
        let own = owned(&claims, &objects[0].key, true);
        assert!(objects_to_check(&claims, &own).is_empty());
        let plan = resolve(&ev, &claims, &own, &HashSet::new(), "1", "2");
        assert!(plan.lake.is_empty());
        assert_eq!(plan.dynamo, [0, 1]);
    }

    /// Invariant: a client retry (same event_id, another record) is dropped everywhere.
    #[test]
    fn duplicates_are_dropped() {
        let ev = decoded(2);
        let (claims, _) = plan_claims(&ev, "1", "2");
        let plan = resolve(&ev, &claims, &[ClaimStatus::New, ClaimStatus::Duplicate], &HashSet::new(), "1", "2");
        assert_eq!(plan.duplicates, 1);
        assert_eq!(plan.dynamo, [0]);
        assert_eq!(plan.new, [0]);
    }
}
