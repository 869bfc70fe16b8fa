//! Pure erasure decisions: who a request names, which lake objects may hold them, what a rewritten object is called, and what each request removed.
//!
//! `forget.rs` does the I/O around these in the order ARCHITECTURE.md ("Forget") requires.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDateTime;
use schemas::lake::{EVENTS_PREFIX, Partition, fnv1a64};
use schemas::visitors::{IdKind, VisitorFilter, visitor_hash};
use sha2::{Digest, Sha256};

use crate::compact::plan::{COMPACTED_PREFIX, ObjectInfo, data_files, file_name, is_compacted};

/// File-name prefix of a micro-batch object rewritten without an erased visitor's rows.
pub const ERASED_PREFIX: &str = "erased-";

/// One erasure request, as a run works on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: i64,
    pub site: String,
    pub kind: IdKind,
    /// The raw ID (only pending requests have one).
    pub visitor: String,
}

impl Request {
    /// The visitor's hash, as the lake's filters hold it.
    pub fn hash(&self) -> i64 {
        visitor_hash(self.kind, Some(&self.site), &self.visitor)
    }
}

/// What the audit keeps of a visitor once its request completes: hex SHA-256 of
/// `<kind>\n<site>\n<ID>`. Pseudonymous, not anonymous: whoever can guess an ID can confirm it.
pub fn audit_hash(kind: IdKind, site: &str, id: &str) -> String {
    let digest = Sha256::digest(format!("{}\n{site}\n{id}", kind.as_str()).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The data objects that may hold a row of a visitor in `hashes`, by partition prefix
/// (`events/dt=…/hour=…/`), in key order. An object is a candidate when its filter may hold one
/// of them, or when it has no readable filter (written before filters existed).
pub fn candidates(
    listing: Vec<ObjectInfo>,
    filters: &HashMap<String, Vec<u8>>,
    hashes: &[i64],
) -> BTreeMap<String, Vec<Candidate>> {
    let mut out: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for object in data_files(listing) {
        let filter = filters.get(&object.key).and_then(|b| VisitorFilter::from_bytes(b.clone()));
        let indexed = filter.is_some();
        if filter.is_some_and(|f| !hashes.iter().any(|&h| f.may_contain(h))) {
            continue;
        }
        let prefix = partition_prefix_of(&object.key).to_owned();
        out.entry(prefix).or_default().push(Candidate { object, indexed });
    }
    out
}

/// An object to read, and whether it has a filter (one without gets one once read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub object: ObjectInfo,
    pub indexed: bool,
}

/// The part of a key up to and including its last `/`.
pub fn partition_prefix_of(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

/// The hour partition of `events/dt=YYYY-MM-DD/hour=HH/`, or `None` for a key outside the layout.
pub fn partition_of(prefix: &str) -> Option<Partition> {
    let rest = prefix.strip_prefix(EVENTS_PREFIX)?.strip_prefix("/dt=")?;
    let (day, rest) = rest.split_once("/hour=")?;
    let hour = rest.strip_suffix('/')?;
    let at = NaiveDateTime::parse_from_str(&format!("{day}T{hour}:00:00"), "%Y-%m-%dT%H:%M:%S").ok()?;
    let p = Partition::of(at.and_utc());
    (p.path() == format!("dt={day}/hour={hour}")).then_some(p)
}

/// The name of `old` rewritten for `requests` (sorted IDs): derived from both, so a run repeated
/// after a crash overwrites its own earlier output. A compacted object stays a compacted one (the
/// compactor keeps it); a micro-batch object becomes an `erased-` one, which it merges later.
pub fn erased_key(old: &str, requests: &[i64]) -> String {
    let mut parts: Vec<String> = vec![old.to_owned()];
    parts.extend(requests.iter().map(i64::to_string));
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let prefix = if is_compacted(old) { COMPACTED_PREFIX } else { ERASED_PREFIX };
    format!("{}{prefix}{:016x}.parquet", partition_prefix_of(old), fnv1a64(&refs) as u64)
}

/// Whether an erasure wrote this object (for reports; it is a data file like any other).
pub fn is_erased(key: &str) -> bool {
    file_name(key).starts_with(ERASED_PREFIX)
}

/// Rows and objects removed per request ID, from the rows one object matched: (event ID, the
/// visitor hashes it matched) against `by_hash` (visitor hash → request IDs).
pub fn removed_per_request(matched: &[(u128, Vec<i64>)], by_hash: &HashMap<i64, Vec<i64>>) -> BTreeMap<i64, u64> {
    let mut rows: BTreeMap<i64, u64> = BTreeMap::new();
    for (_, hashes) in matched {
        let mut ids: Vec<i64> = hashes.iter().flat_map(|h| by_hash.get(h).into_iter().flatten().copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            *rows.entry(id).or_default() += 1;
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str) -> ObjectInfo {
        ObjectInfo { key: key.to_owned(), size: 10 }
    }

    #[test]
    fn candidates_are_objects_whose_filter_may_hold_a_visitor_or_that_have_none() {
        let wanted = visitor_hash(IdKind::Anonymous, Some("s"), "v");
        let other = visitor_hash(IdKind::Anonymous, Some("s"), "w");
        let p1 = "events/dt=2024-05-01/hour=07/";
        let p2 = "events/dt=2024-05-01/hour=08/";
        let filters: HashMap<String, Vec<u8>> = [
            (format!("{p1}a.parquet"), VisitorFilter::of(&[wanted, other]).into_bytes()),
            (format!("{p1}b.parquet"), VisitorFilter::of(&[other]).into_bytes()),
            (format!("{p2}c.parquet"), vec![42]),
        ]
        .into_iter()
        .collect();
        let listing = vec![
            obj(&format!("{p1}a.parquet")),
            obj(&format!("{p1}b.parquet")),
            obj(&format!("{p2}c.parquet")),
            obj(&format!("{p2}d.parquet")),
            obj(&format!("{p2}_SUCCESS")),
        ];
        let got = candidates(listing, &filters, &[wanted]);
        let keys: Vec<(&str, Vec<(&str, bool)>)> = got
            .iter()
            .map(|(p, c)| (p.as_str(), c.iter().map(|c| (file_name(&c.object.key), c.indexed)).collect()))
            .collect();
        // b's filter rules it out; c's bytes are unreadable, d has none: both are read.
        assert_eq!(keys, [(p1, vec![("a.parquet", true)]), (p2, vec![("c.parquet", false), ("d.parquet", false)])]);
    }

    #[test]
    fn partitions_parse_from_their_prefix_only() {
        let p = partition_of("events/dt=2024-05-01/hour=07/").unwrap();
        assert_eq!(p.path(), "dt=2024-05-01/hour=07");
        assert_eq!(partition_prefix_of("events/dt=2024-05-01/hour=07/x.parquet"), "events/dt=2024-05-01/hour=07/");
        for bad in [
            "events/dt=2024-05-01/",
            "dead-letter/dt=2024-05-01/hour=07/",
            "events/dt=2024-13-01/hour=07/",
            "events/dt=2024-05-01/hour=7/",
        ] {
            assert_eq!(partition_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn rewritten_names_keep_the_kind_and_are_stable() {
        let batch = "events/dt=2024-05-01/hour=07/shardId-000000000000-1-9.parquet";
        let compacted = "events/dt=2024-05-01/hour=07/compacted-00000000000000aa.parquet";
        let a = erased_key(batch, &[1, 2]);
        assert!(a.starts_with("events/dt=2024-05-01/hour=07/erased-") && a.ends_with(".parquet"), "{a}");
        assert!(is_erased(&a));
        assert_eq!(a, erased_key(batch, &[1, 2]));
        assert_ne!(a, erased_key(batch, &[1, 3]));
        assert!(is_compacted(&erased_key(compacted, &[1])));
    }

    #[test]
    fn removals_are_counted_once_per_row_and_request() {
        let (h1, h2) = (11, 22);
        let by_hash: HashMap<i64, Vec<i64>> = [(h1, vec![1]), (h2, vec![2])].into_iter().collect();
        // Row 1 matches both requests (an anonymous and a user ID of one person), row 2 only one.
        let rows = removed_per_request(&[(1, vec![h1, h2]), (2, vec![h1])], &by_hash);
        assert_eq!(rows.into_iter().collect::<Vec<_>>(), [(1, 2), (2, 1)]);
    }

    #[test]
    fn audit_hash_is_sha256_of_kind_site_and_id() {
        let h = audit_hash(IdKind::User, "local-demo", "u1");
        assert_eq!(h.len(), 64);
        assert_ne!(h, audit_hash(IdKind::Anonymous, "local-demo", "u1"));
        // sha256("user_id\nlocal-demo\nu1"), pinned: the audit must stay comparable across releases.
        assert_eq!(h, "842c27b2ce66b82310889dcecf13db847efe0370cb4a174541d5a3055d535cf1");
    }
}
