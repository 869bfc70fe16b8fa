//! Pure retention decisions: which partitions and items have outlived their store's retention at a given time.
//!
//! `retention.rs` asks S3, DynamoDB and PostgreSQL what there is and deletes what this module
//! says is expired; nothing here does I/O, so every boundary is unit-tested.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use schemas::lake::Partition;
use service_kit::KitError;
use service_kit::env::{Env, FromEnv};

/// `LAKE_RETENTION_DAYS`' default: 13 months, so a year-over-year comparison of the same month
/// still finds last year's whole month. Terraform's `lake_retention_days` has the same default.
pub const DEFAULT_LAKE_RETENTION_DAYS: u32 = 395;
/// `DEAD_LETTER_RETENTION_DAYS`' default, as Terraform's `dead_letter_retention_days`: long
/// enough to notice a poison record and replay it (`replay dead-letter`), short because the
/// payloads are raw client input.
pub const DEFAULT_DEAD_LETTER_RETENTION_DAYS: u32 = 30;
/// `ERASURE_AUDIT_RETENTION_DAYS`' default: three years, the usual limitation period for a
/// data-protection claim, which is what the audit row answers. It keeps only a hash of the
/// visitor, but a hash of a known ID is still linkable to it, so it is not kept forever.
pub const DEFAULT_ERASURE_AUDIT_RETENTION_DAYS: u32 = 1095;
/// `DEDUP_WINDOW_HOURS`' default, the consumer's.
pub const DEFAULT_DEDUP_WINDOW_HOURS: u32 = 24;

/// How long each store keeps data, in days; 0 keeps it forever. Read from the same variables
/// everywhere (README, "Retention").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `LAKE_RETENTION_DAYS`: hour partitions under `events/`.
    pub lake_days: u32,
    /// `DEAD_LETTER_RETENTION_DAYS`: hour partitions under `dead-letter/`.
    pub dead_letter_days: u32,
    /// `ERASURE_AUDIT_RETENTION_DAYS`: completed erasure requests (their audit rows).
    pub erasure_audit_days: u32,
    /// `DEDUP_WINDOW_HOURS`: the ledger keeps claims this long (it prunes itself by day).
    pub dedup_window_hours: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            lake_days: DEFAULT_LAKE_RETENTION_DAYS,
            dead_letter_days: DEFAULT_DEAD_LETTER_RETENTION_DAYS,
            erasure_audit_days: DEFAULT_ERASURE_AUDIT_RETENTION_DAYS,
            dedup_window_hours: DEFAULT_DEDUP_WINDOW_HOURS,
        }
    }
}

impl FromEnv for Retention {
    fn from_settings<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, KitError> {
        let d = Retention::default();
        Ok(Retention {
            lake_days: env.parse_or("LAKE_RETENTION_DAYS", d.lake_days)?,
            dead_letter_days: env.parse_or("DEAD_LETTER_RETENTION_DAYS", d.dead_letter_days)?,
            erasure_audit_days: env.parse_or("ERASURE_AUDIT_RETENTION_DAYS", d.erasure_audit_days)?,
            dedup_window_hours: env.parse_or("DEDUP_WINDOW_HOURS", d.dedup_window_hours)?,
        })
    }
}

/// The instant before which data kept `days` is expired at `now`; `None` when kept forever.
pub fn cutoff(now: DateTime<Utc>, days: u32) -> Option<DateTime<Utc>> {
    (days > 0).then(|| now - Duration::days(i64::from(days)))
}

/// Whether the whole hour `p` is older than `cutoff`. A partition goes only once its last
/// event is expired, so nothing younger than the retention is ever deleted with it.
pub fn partition_expired(p: &Partition, cutoff: DateTime<Utc>) -> bool {
    p.hour_start() + Duration::hours(1) <= cutoff
}

/// Whether any hour of the day `day` may be expired: the day began before `cutoff`. Only
/// those days are listed hour by hour.
pub fn day_may_be_expired(day: NaiveDate, cutoff: DateTime<Utc>) -> bool {
    day.and_hms_opt(1, 0, 0).is_some_and(|first_hour_end| first_hour_end.and_utc() <= cutoff)
}

/// The day of a listing's common prefix `<root>/dt=YYYY-MM-DD/`; `None` for anything else
/// (a stray object or prefix is never taken for a partition).
pub fn day_of_prefix(root: &str, prefix: &str) -> Option<NaiveDate> {
    let dt = prefix.strip_prefix(root)?.strip_prefix("/dt=")?.strip_suffix('/')?;
    NaiveDate::parse_from_str(dt, "%Y-%m-%d").ok().filter(|d| d.format("%Y-%m-%d").to_string() == dt)
}

/// The hour partition of a listing's common prefix `<root>/dt=YYYY-MM-DD/hour=HH/`.
pub fn partition_of_prefix(root: &str, prefix: &str) -> Option<Partition> {
    let rest = prefix.strip_prefix(root)?.strip_prefix("/dt=")?;
    let (dt, hh) = rest.strip_suffix('/')?.split_once("/hour=")?;
    let day = day_of_prefix(root, &format!("{root}/dt={dt}/"))?;
    let hour: u32 = hh.parse().ok().filter(|h| *h < 24 && hh.len() == 2)?;
    day.and_hms_opt(hour, 0, 0).map(|at| Partition::of(at.and_utc()))
}

/// `<root>/dt=…/hour=…/`: the prefix of one hour partition under `root` (`events` or `dead-letter`).
pub fn partition_prefix(root: &str, p: &Partition) -> String {
    format!("{root}/{}/", p.path())
}

/// The expired hour partitions among `prefixes` (hour prefixes listed under `root`), oldest first.
pub fn expired_partitions(root: &str, prefixes: &[String], cutoff: DateTime<Utc>) -> Vec<Partition> {
    let mut out: Vec<Partition> =
        prefixes.iter().filter_map(|p| partition_of_prefix(root, p)).filter(|p| partition_expired(p, cutoff)).collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a DynamoDB item whose `expires_at` (epoch seconds) is `expires_at` is expired at
/// `now`, as DynamoDB's TTL decides it. An item without a readable `expires_at` never expires,
/// as with TTL.
pub fn item_expired(expires_at: Option<&str>, now: DateTime<Utc>) -> bool {
    expires_at.and_then(|s| s.parse::<i64>().ok()).is_some_and(|at| at < now.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn part(s: &str) -> Partition {
        Partition::of(at(s))
    }

    #[test]
    fn zero_days_keeps_forever() {
        assert_eq!(cutoff(at("2025-06-01T00:00:00Z"), 0), None);
        assert_eq!(cutoff(at("2025-06-01T00:00:00Z"), 30), Some(at("2025-05-02T00:00:00Z")));
    }

    /// Invariant: an hour goes only once its whole hour is past the cutoff.
    #[test]
    fn a_partition_expires_when_its_last_instant_does() {
        let cutoff = at("2025-05-02T10:30:00Z");
        let cases = [
            ("2025-05-02T09:00:00Z", true),
            ("2025-05-02T09:59:59Z", true),
            ("2025-05-02T10:00:00Z", false), // half of it is younger than the cutoff
            ("2025-05-02T11:00:00Z", false),
            ("2024-01-01T00:00:00Z", true),
        ];
        for (hour, expired) in cases {
            assert_eq!(partition_expired(&part(hour), cutoff), expired, "{hour}");
        }
        assert!(partition_expired(&part("2025-05-02T09:00:00Z"), at("2025-05-02T10:00:00Z")), "boundary");
    }

    #[test]
    fn days_are_listed_only_when_an_hour_of_them_may_be_expired() {
        let day = NaiveDate::from_ymd_opt(2025, 5, 2).unwrap();
        assert!(!day_may_be_expired(day, at("2025-05-02T00:59:59Z")));
        assert!(day_may_be_expired(day, at("2025-05-02T01:00:00Z")));
        assert!(day_may_be_expired(day, at("2026-01-01T00:00:00Z")));
        assert!(!day_may_be_expired(day, at("2025-05-01T23:00:00Z")));
    }

    /// Invariant: only well-formed partition prefixes are ever taken for partitions.
    #[test]
    fn prefixes_parse_only_in_the_lake_layout() {
        let cases = [
            ("events/dt=2024-05-01/hour=07/", Some("2024-05-01T07:00:00Z")),
            ("events/dt=2024-05-01/hour=23/", Some("2024-05-01T23:00:00Z")),
            ("events/dt=2024-05-01/hour=24/", None),
            ("events/dt=2024-05-01/hour=7/", None),
            ("events/dt=2024-02-30/hour=07/", None),
            ("events/dt=2024-5-01/hour=07/", None),
            ("events/dt=2024-05-01/", None),
            ("events/other/", None),
            ("dead-letter/dt=2024-05-01/hour=07/", None),
            ("events/dt=2024-05-01/hour=07", None),
        ];
        for (prefix, want) in cases {
            assert_eq!(partition_of_prefix("events", prefix), want.map(part), "{prefix}");
        }
        assert_eq!(
            partition_of_prefix("dead-letter", "dead-letter/dt=2024-05-01/hour=07/"),
            Some(part("2024-05-01T07:00:00Z"))
        );
        assert_eq!(day_of_prefix("events", "events/dt=2024-05-01/"), NaiveDate::from_ymd_opt(2024, 5, 1));
        assert_eq!(day_of_prefix("events", "events/dt=2024-05-01/hour=07/"), None);
        assert_eq!(day_of_prefix("events", "events/_tmp/"), None);
        assert_eq!(partition_prefix("events", &part("2024-05-01T07:00:00Z")), "events/dt=2024-05-01/hour=07/");
    }

    #[test]
    fn expired_partitions_are_the_old_ones_oldest_first() {
        let prefixes: Vec<String> = [
            "events/dt=2024-05-02/hour=00/",
            "events/dt=2024-05-01/hour=23/",
            "events/dt=2024-05-02/hour=01/",
            "events/junk/",
        ]
        .map(String::from)
        .to_vec();
        let got = expired_partitions("events", &prefixes, at("2024-05-02T01:00:00Z"));
        assert_eq!(got, [part("2024-05-01T23:00:00Z"), part("2024-05-02T00:00:00Z")]);
    }

    #[test]
    fn items_expire_as_dynamodb_ttl_decides() {
        let now = at("2025-05-02T00:00:00Z");
        let t = now.timestamp();
        assert!(item_expired(Some(&(t - 1).to_string()), now));
        assert!(!item_expired(Some(&t.to_string()), now));
        assert!(!item_expired(Some(&(t + 86_400).to_string()), now));
        assert!(!item_expired(None, now));
        assert!(!item_expired(Some("soon"), now));
    }

    #[test]
    fn settings_default_and_parse() {
        let r = Retention::from_lookup(|_| None).unwrap();
        assert_eq!(r, Retention::default());
        let r = Retention::from_lookup(|k| match k {
            "LAKE_RETENTION_DAYS" => Some("0".into()),
            "DEAD_LETTER_RETENTION_DAYS" => Some("7".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!((r.lake_days, r.dead_letter_days, r.erasure_audit_days), (0, 7, 1095));
        assert!(Retention::from_lookup(|k| (k == "LAKE_RETENTION_DAYS").then(|| "-1".into())).is_err());
    }
}
