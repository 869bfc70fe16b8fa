//! Pure aggregation: counts per event type and per event type × hour, for the events just claimed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

const SECONDS_PER_HOUR: i64 = 3600;

/// Counts to add in PostgreSQL; sorted, so statements touch rows in a stable order (no deadlocks
/// between concurrent batches upserting the same types).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub totals: BTreeMap<String, i64>,
    pub hourly: BTreeMap<(String, DateTime<Utc>), i64>,
}

impl Counts {
    /// Aggregates `(event_type, received_at)` pairs. A batch holds a handful of types and one or
    /// two hours, so the events are counted under borrowed keys (the hour as a number) and each
    /// distinct key is turned into a `String` and a time once, not once per event.
    pub fn of<'a>(events: impl Iterator<Item = (&'a str, DateTime<Utc>)>) -> Counts {
        let mut hourly: foldhash::HashMap<(&str, i64), i64> = foldhash::HashMap::default();
        for (event_type, received_at) in events {
            *hourly.entry((event_type, received_at.timestamp().div_euclid(SECONDS_PER_HOUR))).or_default() += 1;
        }
        let mut counts = Counts::default();
        for ((event_type, hour), n) in hourly {
            *counts.totals.entry(event_type.to_owned()).or_default() += n;
            let hour = DateTime::from_timestamp(hour * SECONDS_PER_HOUR, 0).unwrap_or_default();
            *counts.hourly.entry((event_type.to_owned(), hour)).or_default() += n;
        }
        counts
    }

    pub fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }

    /// Column arrays for the single `UNNEST` upsert: (types, counts) and (types, hours, counts).
    pub fn as_columns(&self) -> UpsertColumns {
        UpsertColumns {
            total_types: self.totals.keys().cloned().collect(),
            total_counts: self.totals.values().copied().collect(),
            hourly_types: self.hourly.keys().map(|(t, _)| t.clone()).collect(),
            hourly_hours: self.hourly.keys().map(|(_, h)| *h).collect(),
            hourly_counts: self.hourly.values().copied().collect(),
        }
    }
}

/// The parameters of the counts upsert, as parallel arrays.
#[derive(Debug, PartialEq, Eq)]
pub struct UpsertColumns {
    pub total_types: Vec<String>,
    pub total_counts: Vec<i64>,
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
        let cols = Counts::of(events.iter().map(|(e, at)| (*e, *at))).as_columns();
        assert_eq!(cols.total_types, ["click", "page_view"]);
        assert_eq!(cols.total_counts, [1, 3]);
        assert_eq!(cols.hourly_types, ["click", "page_view", "page_view"]);
        assert_eq!(
            cols.hourly_hours,
            [t("2024-05-01T10:00:00Z"), t("2024-05-01T10:00:00Z"), t("2024-05-01T11:00:00Z")]
        );
        assert_eq!(cols.hourly_counts, [1, 1, 2]);
    }

    /// Invariant: an event is counted in the hour of its lake partition (the hours agree with
    /// `Partition::hour_start`, before 1970 too).
    #[test]
    fn hours_are_the_lake_partitions_hours() {
        for at in ["2024-05-01T10:59:59.999Z", "2024-05-01T11:00:00Z", "1969-12-31T23:59:59.5Z", "1960-03-01T00:00:00Z"]
        {
            let counts = Counts::of([("a", t(at))].into_iter());
            let hour = counts.hourly.keys().next().unwrap().1;
            assert_eq!(hour, schemas::lake::Partition::of(t(at)).hour_start(), "{at}");
        }
    }
}
