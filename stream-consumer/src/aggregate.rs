//! Pure aggregation: counts per site and event type, and per site, event type and hour, for the
//! events just claimed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

const SECONDS_PER_HOUR: i64 = 3600;

/// The site of events recorded before sites existed (no `site` in the record): the aggregate
/// tables' key columns cannot be null, and migration 0004_site.sql gives the older rows this too.
pub const NO_SITE: &str = "";

/// A row of `event_type_counts`: (site, event type).
pub type TotalKey = (String, String);
/// A row of `event_type_hourly_counts`: (site, event type, hour).
pub type HourKey = (String, String, DateTime<Utc>);

/// Counts to add in PostgreSQL; sorted, so statements touch rows in a stable order (no deadlocks
/// between concurrent batches upserting the same types).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub totals: BTreeMap<TotalKey, i64>,
    pub hourly: BTreeMap<HourKey, i64>,
}

impl Counts {
    /// Aggregates `(site, event_type, received_at)` triples. A batch holds a site or two, a
    /// handful of types and one or two hours, so the events are counted under borrowed keys (the
    /// hour as a number) and each distinct key is turned into `String`s and a time once, not once
    /// per event.
    pub fn of<'a>(events: impl Iterator<Item = (Option<&'a str>, &'a str, DateTime<Utc>)>) -> Counts {
        let mut hourly: foldhash::HashMap<(&str, &str, i64), i64> = foldhash::HashMap::default();
        for (site, event_type, received_at) in events {
            let hour = received_at.timestamp().div_euclid(SECONDS_PER_HOUR);
            *hourly.entry((site.unwrap_or(NO_SITE), event_type, hour)).or_default() += 1;
        }
        let mut counts = Counts::default();
        for ((site, event_type, hour), n) in hourly {
            *counts.totals.entry((site.to_owned(), event_type.to_owned())).or_default() += n;
            let hour = DateTime::from_timestamp(hour * SECONDS_PER_HOUR, 0).unwrap_or_default();
            *counts.hourly.entry((site.to_owned(), event_type.to_owned(), hour)).or_default() += n;
        }
        counts
    }

    pub fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }

    /// Column arrays for the single `UNNEST` upsert: (sites, types, counts) and (sites, types,
    /// hours, counts).
    pub fn as_columns(&self) -> UpsertColumns {
        UpsertColumns {
            total_sites: self.totals.keys().map(|(s, _)| s.clone()).collect(),
            total_types: self.totals.keys().map(|(_, t)| t.clone()).collect(),
            total_counts: self.totals.values().copied().collect(),
            hourly_sites: self.hourly.keys().map(|(s, ..)| s.clone()).collect(),
            hourly_types: self.hourly.keys().map(|(_, t, _)| t.clone()).collect(),
            hourly_hours: self.hourly.keys().map(|(.., h)| *h).collect(),
            hourly_counts: self.hourly.values().copied().collect(),
        }
    }
}

/// The parameters of the counts upsert, as parallel arrays.
#[derive(Debug, PartialEq, Eq)]
pub struct UpsertColumns {
    pub total_sites: Vec<String>,
    pub total_types: Vec<String>,
    pub total_counts: Vec<i64>,
    pub hourly_sites: Vec<String>,
    pub hourly_types: Vec<String>,
    pub hourly_hours: Vec<DateTime<Utc>>,
    pub hourly_counts: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn counts_per_type_and_hour_as_columns() {
        let events = [
            ("page_view", t("2024-05-01T10:59:59Z")),
            ("click", t("2024-05-01T10:00:00Z")),
            ("page_view", t("2024-05-01T11:00:00Z")),
            ("page_view", t("2024-05-01T11:30:00Z")),
        ];
        let cols = Counts::of(events.iter().map(|(e, at)| (Some("s"), *e, *at))).as_columns();
        assert_eq!(cols.total_sites, ["s", "s"]);
        assert_eq!(cols.total_types, ["click", "page_view"]);
        assert_eq!(cols.total_counts, [1, 3]);
        assert_eq!(cols.hourly_types, ["click", "page_view", "page_view"]);
        assert_eq!(
            cols.hourly_hours,
            [t("2024-05-01T10:00:00Z"), t("2024-05-01T10:00:00Z"), t("2024-05-01T11:00:00Z")]
        );
        assert_eq!(cols.hourly_counts, [1, 1, 2]);
    }

    /// Invariant: counts are kept apart per site, and events without one (recorded before sites)
    /// count under [`NO_SITE`].
    #[test]
    fn counts_per_site() {
        let at = t("2024-05-01T10:00:00Z");
        let counts = Counts::of(
            [(Some("b"), "click", at), (None, "click", at), (Some("a"), "click", at), (Some("a"), "click", at)]
                .into_iter(),
        );
        let totals: Vec<(&str, &str, i64)> =
            counts.totals.iter().map(|((s, e), n)| (s.as_str(), e.as_str(), *n)).collect();
        assert_eq!(totals, [("", "click", 1), ("a", "click", 2), ("b", "click", 1)]);
        assert_eq!(counts.hourly.len(), 3);
    }

    /// Invariant: an event is counted in the hour of its lake partition (the hours agree with
    /// `Partition::hour_start`, before 1970 too).
    #[test]
    fn hours_are_the_lake_partitions_hours() {
        for at in ["2024-05-01T10:59:59.999Z", "2024-05-01T11:00:00Z", "1969-12-31T23:59:59.5Z", "1960-03-01T00:00:00Z"]
        {
            let counts = Counts::of([(None, "a", t(at))].into_iter());
            let hour = counts.hourly.keys().next().unwrap().2;
            assert_eq!(hour, schemas::lake::Partition::of(t(at)).hour_start(), "{at}");
        }
    }
}
