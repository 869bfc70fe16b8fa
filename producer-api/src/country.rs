//! The client address's country, looked up in an MMDB database loaded once at start-up, before the address is anonymised.
//!
//! Optional: without `GEOIP_COUNTRY_DB`, or when the file it names is absent, the lookup is off
//! and events carry no `country`. The database is read whole into memory (a country database is
//! ~8 MB) so a lookup is a walk of its search tree and the decoding of one tiny record, with no
//! I/O on the request path. Only the request's full address is looked up, once per request (all
//! its events share it); the answer, never the address, goes on with the events.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::Reader;
use serde::Deserialize;

use crate::error::IngestError;

/// The environment variable naming the database file.
pub const GEOIP_COUNTRY_DB: &str = "GEOIP_COUNTRY_DB";

/// Length of an ISO 3166-1 alpha-2 code.
const ISO_CODE_LEN: usize = 2;

/// Whether the lookup is on, and if not, why (for the one start-up log line).
#[derive(Debug, Default)]
pub enum CountryLookup {
    /// `GEOIP_COUNTRY_DB` is not set.
    #[default]
    Unset,
    /// `GEOIP_COUNTRY_DB` names a file that does not exist (e.g. a deployment packaged without
    /// it): off, as if unset, but said differently in the log.
    Absent(PathBuf),
    /// The database, loaded.
    On(CountryDb),
}

impl CountryLookup {
    /// The lookup for `path` (the value of [`GEOIP_COUNTRY_DB`], if set). A file that exists
    /// but cannot be read or is not an MMDB database is an error: someone asked for the lookup,
    /// and a producer that silently drops it would go unnoticed for months.
    pub fn from_setting(path: Option<&str>) -> Result<Self, IngestError> {
        let Some(path) = path.map(str::trim).filter(|p| !p.is_empty()) else {
            return Ok(CountryLookup::Unset);
        };
        let path = PathBuf::from(path);
        if !path.exists() {
            return Ok(CountryLookup::Absent(path));
        }
        CountryDb::open(&path).map(CountryLookup::On)
    }

    /// The country of `ip`, if the lookup is on and the database knows it.
    pub fn country(&self, ip: IpAddr) -> Option<&str> {
        match self {
            CountryLookup::On(db) => db.country(ip),
            CountryLookup::Unset | CountryLookup::Absent(_) => None,
        }
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        match self {
            CountryLookup::Unset => format!("country lookup off: {GEOIP_COUNTRY_DB} is not set"),
            CountryLookup::Absent(path) => {
                format!("country lookup off: {GEOIP_COUNTRY_DB} names {}, which does not exist", path.display())
            }
            CountryLookup::On(db) => format!("country lookup on: {} ({})", db.path.display(), db.database_type()),
        }
    }
}

/// An MMDB country database in memory.
#[derive(Debug)]
pub struct CountryDb {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
}

/// The fields of a database record the lookup reads. Two layouts are in use: the
/// `@ip-location-db` packages' `{"country_code": "DE"}`, and MaxMind's GeoIP2/GeoLite2
/// `{"country": {"iso_code": "DE", …}}`; either file works. Strings borrow the database.
#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(borrow, default)]
    country: Option<MaxMindCountry<'a>>,
}

#[derive(Deserialize)]
struct MaxMindCountry<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

impl CountryDb {
    /// Reads the database at `path` into memory and checks its metadata.
    pub fn open(path: &Path) -> Result<Self, IngestError> {
        let fail = |reason: String| IngestError::CountryDb { path: path.display().to_string(), reason };
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let reader = Reader::from_source(bytes).map_err(|e| fail(e.to_string()))?;
        Ok(CountryDb { reader, path: path.to_owned() })
    }

    /// The database's own name for what it is (its metadata's `database_type`).
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// The ISO 3166-1 alpha-2 code of `ip`'s country; `None` for addresses the database does not
    /// place (private, loopback and unallocated ones among them), and for a record that is not a
    /// two-letter code: whatever the file holds, only a code reaches the stores.
    pub fn country(&self, ip: IpAddr) -> Option<&str> {
        // An IPv4-mapped IPv6 address is the IPv4 address (as `anonymise_ip` also treats it).
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        // A lookup error means a damaged record or an IPv6 address in an IPv4-only database:
        // either way the database does not place this address.
        let entry: Entry<'_> = self.reader.lookup(ip).ok()?.decode().ok()??;
        iso_code(entry.country_code.or(entry.country.and_then(|c| c.iso_code))?)
    }
}

/// `code` if it is an ISO 3166-1 alpha-2 code in form (two ASCII capital letters).
pub fn iso_code(code: &str) -> Option<&str> {
    (code.len() == ISO_CODE_LEN && code.bytes().all(|b| b.is_ascii_uppercase())).then_some(code)
}

/// Writes small MMDB databases for tests: the `maxminddb` crate only reads them, and the real
/// database is an 8 MB download that unit tests should not need. Follows the MaxMind DB format
/// 2.0 specification: a binary search tree over the address bits (24-bit records), sixteen zero
/// bytes, the data section, then the metadata after its marker.
#[cfg(test)]
pub mod test_mmdb {
    use std::net::IpAddr;

    /// A database of `networks` (address, prefix length, record), IPv6-shaped (`ip_version` 6)
    /// with IPv4 networks under `::/96`, as real databases hold them. Each record is a map of
    /// string keys to strings or maps (`Value`). Networks must not overlap.
    pub fn database(networks: &[(IpAddr, u8, Value)]) -> Vec<u8> {
        const EMPTY: Rec = Rec::Empty;
        let mut nodes: Vec<[Rec; 2]> = vec![[EMPTY, EMPTY]];
        let mut data = Vec::new();
        for (ip, prefix, value) in networks {
            let (bits, len) = match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(*v4)), u32::from(*prefix) + 96),
                IpAddr::V6(v6) => (u128::from(*v6), u32::from(*prefix)),
            };
            let offset = data.len();
            value.encode(&mut data);
            let mut node = 0;
            for i in 0..len {
                let bit = usize::from(bits >> (127 - i) & 1 == 1);
                if i + 1 == len {
                    nodes[node][bit] = Rec::Data(offset);
                } else {
                    node = match nodes[node][bit] {
                        Rec::Node(next) => next,
                        _ => {
                            nodes.push([EMPTY, EMPTY]);
                            nodes[node][bit] = Rec::Node(nodes.len() - 1);
                            nodes.len() - 1
                        }
                    };
                }
            }
        }
        let count = nodes.len();
        let mut out = Vec::new();
        for pair in &nodes {
            for rec in pair {
                let value = match rec {
                    Rec::Node(n) => *n,
                    Rec::Empty => count,
                    Rec::Data(offset) => count + 16 + offset,
                };
                out.extend_from_slice(&u32::try_from(value).expect("a small database").to_be_bytes()[1..]);
            }
        }
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
        let u16_of = |n: u16| Value::U16(n);
        Value::Map(vec![
            ("binary_format_major_version", u16_of(2)),
            ("binary_format_minor_version", u16_of(0)),
            ("build_epoch", Value::U64(1_700_000_000)),
            ("database_type", Value::Str("test-country")),
            ("description", Value::Map(vec![("en", Value::Str("test"))])),
            ("ip_version", u16_of(6)),
            ("languages", Value::Array(vec![Value::Str("en")])),
            ("node_count", Value::U32(u32::try_from(count).expect("a small database"))),
            ("record_size", u16_of(24)),
        ])
        .encode(&mut out);
        out
    }

    #[derive(Clone, Copy)]
    enum Rec {
        Empty,
        Node(usize),
        Data(usize),
    }

    /// The data types the test databases use.
    pub enum Value {
        Str(&'static str),
        U16(u16),
        U32(u32),
        U64(u64),
        Map(Vec<(&'static str, Value)>),
        Array(Vec<Value>),
    }

    impl Value {
        /// Control byte(s) then payload; sizes stay below 29, so each fits the control byte.
        fn encode(&self, out: &mut Vec<u8>) {
            // Types 1–7 live in the control byte's top three bits; extended ones are 0 there and
            // `type − 7` in the next byte.
            let mut head = |kind: u8, size: usize| {
                let size = u8::try_from(size).ok().filter(|s| *s < 29).expect("a short value");
                if kind <= 7 {
                    out.push(kind << 5 | size);
                } else {
                    out.extend_from_slice(&[size, kind - 7]);
                }
            };
            match self {
                Value::Str(s) => {
                    head(2, s.len());
                    out.extend_from_slice(s.as_bytes());
                }
                Value::U16(n) => {
                    head(5, 2);
                    out.extend_from_slice(&n.to_be_bytes());
                }
                Value::U32(n) => {
                    head(6, 4);
                    out.extend_from_slice(&n.to_be_bytes());
                }
                Value::U64(n) => {
                    head(9, 8);
                    out.extend_from_slice(&n.to_be_bytes());
                }
                Value::Map(entries) => {
                    head(7, entries.len());
                    for (key, value) in entries {
                        Value::Str(key).encode(out);
                        value.encode(out);
                    }
                }
                Value::Array(items) => {
                    head(11, items.len());
                    for item in items {
                        item.encode(out);
                    }
                }
            }
        }
    }

    /// An `@ip-location-db` record: `{"country_code": code}`.
    pub fn ip_location_db(code: &'static str) -> Value {
        Value::Map(vec![("country_code", Value::Str(code))])
    }

    /// A MaxMind GeoIP2 country record: `{"country": {"iso_code": code, "names": {…}}}`.
    pub fn maxmind(code: &'static str, name: &'static str) -> Value {
        let names = Value::Map(vec![("en", Value::Str(name))]);
        Value::Map(vec![("country", Value::Map(vec![("iso_code", Value::Str(code)), ("names", names)]))])
    }
}

#[cfg(test)]
mod tests {
    use super::test_mmdb::{Value, database, ip_location_db, maxmind};
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A temporary directory, removed when dropped.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A database file in a fresh temporary directory.
    fn file_of(bytes: &[u8]) -> (PathBuf, Dir) {
        let dir = std::env::temp_dir().join(format!("country-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("country.mmdb");
        std::fs::write(&path, bytes).unwrap();
        (path, Dir(dir))
    }

    fn sample() -> CountryDb {
        let bytes = database(&[
            (ip("203.0.113.0"), 24, ip_location_db("NZ")),
            (ip("198.51.100.0"), 25, maxmind("DE", "Germany")),
            (ip("2001:db8:1::"), 48, ip_location_db("FR")),
            (ip("192.0.2.0"), 25, ip_location_db("not a code")),
            (ip("192.0.2.128"), 25, Value::Map(vec![("asn", Value::U32(64_500))])),
        ]);
        let (path, _dir) = file_of(&bytes);
        CountryDb::open(&path).unwrap()
    }

    /// Invariant: an address gets its network's two-letter code in either record layout, and
    /// nothing when the database does not place it or holds no code for it.
    #[test]
    fn lookup_answers_codes_only() {
        let db = sample();
        for (address, want) in [
            ("203.0.113.77", Some("NZ")),
            ("203.0.113.0", Some("NZ")),
            ("::ffff:203.0.113.9", Some("NZ")),
            ("198.51.100.127", Some("DE")),
            ("198.51.100.128", None),
            ("2001:db8:1:ffff::1", Some("FR")),
            ("2001:db8:2::1", None),
            ("192.0.2.1", None),
            ("192.0.2.200", None),
            ("127.0.0.1", None),
            ("10.1.2.3", None),
        ] {
            assert_eq!(db.country(ip(address)), want, "{address}");
        }
        assert_eq!(db.database_type(), "test-country");
    }

    #[test]
    fn iso_codes_are_two_capital_letters() {
        for good in ["DE", "NZ", "ZZ"] {
            assert_eq!(iso_code(good), Some(good));
        }
        for bad in ["", "D", "de", "DEU", "D1", "É", "Ä"] {
            assert_eq!(iso_code(bad), None, "{bad}");
        }
    }

    /// Invariant: the lookup is off when the setting is unset or names no file, and a file that
    /// is there but is not a database stops the start.
    #[test]
    fn setting_turns_the_lookup_on_or_off() {
        assert!(matches!(CountryLookup::from_setting(None), Ok(CountryLookup::Unset)));
        assert!(matches!(CountryLookup::from_setting(Some(" ")), Ok(CountryLookup::Unset)));
        let absent = CountryLookup::from_setting(Some("/nonexistent/country.mmdb")).unwrap();
        assert!(matches!(absent, CountryLookup::Absent(_)));
        assert_eq!(absent.country(ip("203.0.113.77")), None);
        assert!(absent.describe().contains("does not exist"), "{}", absent.describe());

        let (path, _dir) = file_of(&database(&[(ip("203.0.113.0"), 24, ip_location_db("NZ"))]));
        let on = CountryLookup::from_setting(path.to_str()).unwrap();
        assert_eq!(on.country(ip("203.0.113.77")), Some("NZ"));
        assert!(on.describe().starts_with("country lookup on"), "{}", on.describe());

        let (corrupt, _dir2) = file_of(b"not an mmdb file");
        let err = CountryLookup::from_setting(corrupt.to_str()).unwrap_err();
        assert!(matches!(&err, IngestError::CountryDb { path, .. } if path.ends_with("country.mmdb")), "{err}");
    }
}
