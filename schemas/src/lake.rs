//! The Parquet lake: its Arrow schema (Athena engine v3 safe), Hive partitions and object key layout.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Datelike, Timelike, Utc};

/// Prefix of event objects in the lake bucket; the Glue table's location.
pub const EVENTS_PREFIX: &str = "events";
/// Prefix of quarantined records (NDJSON), outside the Glue table's location.
pub const DEAD_LETTER_PREFIX: &str = "dead-letter";

/// Column names and Glue/Athena types, in order. Terraform's Glue table must list exactly these
/// (a test in `terraform/tests` compares them with `lake_columns.json`, which a test here
/// compares with this schema).
pub const COLUMNS: [(&str, &str); 23] = [
    ("event_id", "string"),
    ("event_type", "string"),
    ("occurred_at", "timestamp"),
    ("received_at", "timestamp"),
    ("anonymous_id", "string"),
    ("user_id", "string"),
    ("session_id", "string"),
    ("url", "string"),
    ("referrer", "string"),
    ("user_agent", "string"),
    ("client_ip", "string"),
    ("properties", "string"),
    ("browser", "string"),
    ("os", "string"),
    ("device_class", "string"),
    ("is_bot", "boolean"),
    ("source_shard", "string"),
    ("source_sequence", "string"),
    // Added with sites (migration 0004_site.sql's lake counterpart): last, so every earlier
    // column keeps its position; files written before it have no such column and engines that
    // match Parquet columns by name (Athena's default, DuckDB with union_by_name) read null.
    ("site", "string"),
    // Added with clock correction, after `site` for the same reason (older files read null):
    // the client's own `occurred_at` when the producer corrected it, and the client's clock at
    // send. `occurred_at` is the corrected time.
    ("original_occurred_at", "timestamp"),
    ("sent_at", "timestamp"),
    // Added with tracking plans: a warn-mode plan's violations as a JSON array of
    // {pointer, rule, message}; null when the event was clean or its type has no plan (and in
    // older files).
    ("plan_violations", "string"),
    // Added with the country lookup: the client address's ISO 3166-1 alpha-2 country, found by
    // the producer before it anonymised the address; null when the lookup is off or knew the
    // address not (and in older files).
    ("country", "string"),
];

/// Hive partition columns, not stored in the files: `dt` (`YYYY-MM-DD`) and `hour` (`HH`).
pub const PARTITION_COLUMNS: [(&str, &str); 2] = [("dt", "string"), ("hour", "string")];

/// The Arrow schema of every event file. Timestamps are milliseconds in UTC because Athena
/// reads Parquet INT64 millis as `timestamp`; strings are plain `Utf8` (not views or large
/// strings, which older readers reject); no unsigned integers (Athena has none).
pub fn arrow_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let fields: Vec<Field> = COLUMNS
                .iter()
                .map(|(name, glue)| {
                    let timestamp = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
                    let (data_type, nullable) = match (*name, *glue) {
                        ("occurred_at" | "received_at", _) => (timestamp, false),
                        (_, "timestamp") => (timestamp, true),
                        (_, "boolean") => (DataType::Boolean, false),
                        ("event_id" | "event_type" | "properties" | "source_shard" | "source_sequence", _) => {
                            (DataType::Utf8, false)
                        }
                        _ => (DataType::Utf8, true),
                    };
                    Field::new(*name, data_type, nullable)
                })
                .collect();
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// One Hive partition of the lake, by **receive** time (see ARCHITECTURE.md for why).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
}

impl Partition {
    pub fn of(received_at: DateTime<Utc>) -> Self {
        Partition {
            year: received_at.year(),
            month: received_at.month(),
            day: received_at.day(),
            hour: received_at.hour(),
        }
    }

    /// `dt=YYYY-MM-DD/hour=HH`
    pub fn path(&self) -> String {
        format!("dt={:04}-{:02}-{:02}/hour={:02}", self.year, self.month, self.day, self.hour)
    }

    /// The start of the hour, for hourly counts.
    pub fn hour_start(&self) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(self.year, self.month, self.day, self.hour, 0, 0).single().unwrap_or_default()
    }
}

/// Key of the events object for one batch and partition:
/// `events/dt=…/hour=…/<shard>-<first sequence>-<last sequence>.parquet`.
/// Derived only from stream positions, so a retried batch overwrites its own object.
/// Shard IDs and sequence numbers are Kinesis-generated (`shardId-…`, digits); nothing a client
/// sends ever reaches a key.
pub fn events_object_key(partition: &Partition, shard_id: &str, first_seq: &str, last_seq: &str) -> String {
    format!(
        "{EVENTS_PREFIX}/{}/{}-{}-{}.parquet",
        partition.path(),
        sanitize(shard_id),
        sanitize(first_seq),
        sanitize(last_seq)
    )
}

/// Key of the dead-letter object for one batch: NDJSON, partitioned by arrival hour.
pub fn dead_letter_object_key(partition: &Partition, shard_id: &str, first_seq: &str, last_seq: &str) -> String {
    format!(
        "{DEAD_LETTER_PREFIX}/{}/{}-{}-{}.ndjson",
        partition.path(),
        sanitize(shard_id),
        sanitize(first_seq),
        sanitize(last_seq)
    )
}

/// Defence in depth for key parts that come from the stream service: keep `[A-Za-z0-9_-]`.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// 64-bit FNV-1a. Stable across builds and platforms (unlike `std`'s hasher), which matters
/// because the values are stored. Collisions only matter between two records carrying the same
/// `event_id`, at odds of 2^-64.
pub fn fnv1a64(parts: &[&str]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= u64::from(b'/');
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a64(&["shardId-000000000000", "1"]), fnv1a64(&["shardId-000000000000", "1"]));
        assert_ne!(fnv1a64(&["a", "bc"]), fnv1a64(&["ab", "c"]));
        // Pinned: stored values must never change between releases.
        assert_eq!(fnv1a64(&["abc"]), 0xe71fa2190541574b_u64 as i64);
    }

    #[test]
    fn key_layout() {
        let p = Partition::of("2024-05-01T07:59:59.999Z".parse().unwrap());
        assert_eq!(
            events_object_key(&p, "shardId-000000000001", "4960", "4970"),
            "events/dt=2024-05-01/hour=07/shardId-000000000001-4960-4970.parquet"
        );
        assert_eq!(
            dead_letter_object_key(&p, "shardId-0/../x", "1", "2"),
            "dead-letter/dt=2024-05-01/hour=07/shardId-0____x-1-2.ndjson"
        );
        assert_eq!(p.hour_start().to_rfc3339(), "2024-05-01T07:00:00+00:00");
    }
}
