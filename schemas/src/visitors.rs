//! Who a lake object may hold: visitor hashes and the per-object Bloom filter that erasure reads instead of the lake.
//!
//! A visitor is one of an event's two IDs, scoped by site: `(site, anonymous_id)` or
//! `(site, user_id)`. Every writer of a lake object (the consumer's batch files, the compactor's
//! and forget's rewritten files) stores a filter of the visitors of its rows in PostgreSQL
//! (`lake_object_visitors`, migration 0011), so `forget` reads a few bytes per object to find the
//! objects that may hold a visitor, and only those objects themselves.
//!
//! The filter's bytes are stored, so their format is pinned like [`fnv1a64`]'s values:
//! `[FORMAT_VERSION, k, bits…]`, bit `i` being bit `i % 8` of byte `2 + i / 8`, and the `k`
//! positions of a hash `h` are `(lo + j·hi) mod m` for `j` in `0..k`, where `lo` and `hi` are
//! the low and high 32 bits of `h` (`hi` made odd) and `m` the number of bits — double hashing
//! (Kirsch and Mitzenmacher), which needs one 64-bit hash per visitor. A crate's filter would
//! bring its own hashing and serialisation, which could change under us; this is 40 lines.

use crate::lake::fnv1a64;

/// The first byte of every stored filter.
pub const FORMAT_VERSION: u8 = 1;
/// Bits per visitor: with [`HASHES`] positions, a false positive rate under 1 %, so forget
/// reads about one object in a hundred that does not hold the visitor.
pub const BITS_PER_VISITOR: usize = 10;
/// Positions set per visitor (optimal for 10 bits per entry is ln 2 · 10 ≈ 7).
pub const HASHES: u8 = 7;
/// The smallest filter's bit array, in bytes.
const MIN_BYTES: usize = 8;
/// Bytes before the bit array: version and `k`.
const HEADER: usize = 2;

/// Which of an event's IDs names the visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Anonymous,
    User,
}

impl IdKind {
    /// The name used in requests, audit rows and the DynamoDB attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Anonymous => "anonymous_id",
            IdKind::User => "user_id",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "anonymous_id" => Some(IdKind::Anonymous),
            "user_id" => Some(IdKind::User),
            _ => None,
        }
    }
}

/// The stored hash of one visitor. An event without a site is scoped by the empty site.
pub fn visitor_hash(kind: IdKind, site: Option<&str>, id: &str) -> i64 {
    fnv1a64(&[kind.as_str(), site.unwrap_or(""), id])
}

/// The hashes of the visitors one event belongs to (none, one or two), skipping empty IDs as
/// every store does.
pub fn event_visitors(site: Option<&str>, anonymous_id: Option<&str>, user_id: Option<&str>) -> [Option<i64>; 2] {
    let of = |kind, id: Option<&str>| id.filter(|v| !v.is_empty()).map(|id| visitor_hash(kind, site, id));
    [of(IdKind::Anonymous, anonymous_id), of(IdKind::User, user_id)]
}

/// A Bloom filter over visitor hashes, in its stored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitorFilter {
    bytes: Vec<u8>,
}

impl VisitorFilter {
    /// A filter sized for `hashes` (duplicates allowed) holding all of them.
    pub fn of(hashes: &[i64]) -> Self {
        let mut distinct = hashes.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let bits = (distinct.len() * BITS_PER_VISITOR).div_ceil(8).max(MIN_BYTES);
        let mut bytes = vec![0u8; HEADER + bits];
        bytes[0] = FORMAT_VERSION;
        bytes[1] = HASHES;
        let m = bits * 8;
        for h in distinct {
            for bit in positions(m, HASHES, h) {
                bytes[HEADER + bit / 8] |= 1 << (bit % 8);
            }
        }
        VisitorFilter { bytes }
    }

    /// A stored filter, or `None` when the bytes are not one this version wrote (the caller
    /// then reads the object, as for an object without a filter).
    pub fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() > HEADER && bytes[0] == FORMAT_VERSION && bytes[1] > 0).then_some(VisitorFilter { bytes })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// False means the object holds no row of this visitor; true means it may.
    pub fn may_contain(&self, hash: i64) -> bool {
        let m = (self.bytes.len() - HEADER) * 8;
        positions(m, self.bytes[1], hash).all(|bit| self.bytes[HEADER + bit / 8] & (1 << (bit % 8)) != 0)
    }
}

/// The `k` bit positions of `hash` in a filter of `m` bits (see the module doc).
fn positions(m: usize, k: u8, hash: i64) -> impl Iterator<Item = usize> {
    let m = m as u64;
    let h = hash as u64;
    let (lo, hi) = (h & 0xffff_ffff, (h >> 32) | 1);
    (0..u64::from(k)).map(move |j| (lo.wrapping_add(j.wrapping_mul(hi)) % m) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_it_was_built_from_and_rarely_more() {
        let members: Vec<i64> =
            (0..2_000).map(|i| visitor_hash(IdKind::Anonymous, Some("s"), &format!("a{i}"))).collect();
        let filter = VisitorFilter::of(&members);
        assert!(members.iter().all(|&h| filter.may_contain(h)));
        let outsiders =
            (0..20_000).filter(|i| filter.may_contain(visitor_hash(IdKind::User, Some("s"), &format!("a{i}"))));
        let rate = outsiders.count() as f64 / 20_000.0;
        assert!(rate < 0.02, "false positive rate {rate}");
        assert_eq!(filter.as_bytes().len(), 2 + 2_000 * BITS_PER_VISITOR / 8);
    }

    #[test]
    fn scopes_visitors_by_kind_and_site() {
        let h = visitor_hash(IdKind::Anonymous, Some("a"), "x");
        assert_ne!(h, visitor_hash(IdKind::User, Some("a"), "x"));
        assert_ne!(h, visitor_hash(IdKind::Anonymous, Some("b"), "x"));
        assert_eq!(visitor_hash(IdKind::Anonymous, None, "x"), visitor_hash(IdKind::Anonymous, Some(""), "x"));
        assert_eq!(event_visitors(Some("a"), Some("x"), Some("")), [Some(h), None]);
        assert_eq!(IdKind::parse("user_id"), Some(IdKind::User));
        assert_eq!(IdKind::parse("email"), None);
    }

    #[test]
    fn stored_form_is_pinned() {
        let filter = VisitorFilter::of(&[visitor_hash(IdKind::Anonymous, Some("local-demo"), "v1")]);
        assert_eq!(filter.as_bytes().len(), 2 + MIN_BYTES);
        assert_eq!(&filter.as_bytes()[..2], &[FORMAT_VERSION, HASHES]);
        let back = VisitorFilter::from_bytes(filter.as_bytes().to_vec()).unwrap();
        assert!(back.may_contain(visitor_hash(IdKind::Anonymous, Some("local-demo"), "v1")));
        assert_eq!(VisitorFilter::from_bytes(vec![9, 7, 0]), None, "an unknown version is not trusted");
        assert_eq!(VisitorFilter::from_bytes(vec![FORMAT_VERSION]), None);
        // An empty object's filter holds nothing.
        assert!(!VisitorFilter::of(&[]).may_contain(1));
    }
}
