//! Decoding a batch of stream records into events, quarantining what cannot be decoded, and in-batch dedup.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use schemas::{EnrichedEvent, decode_record};

/// One stream record, independent of where it came from (Lambda event or the local runner).
#[derive(Debug, Clone)]
pub struct InputRecord {
    pub shard_id: String,
    pub sequence_number: String,
    pub approximate_arrival: DateTime<Utc>,
    pub data: Bytes,
}

/// A decoded event and the record that carried it, borrowing the record's bytes and position.
#[derive(Debug, Clone)]
pub struct DecodedEvent<'a> {
    pub event: EnrichedEvent<'a>,
    pub shard_id: &'a str,
    pub sequence_number: &'a str,
}

/// A record that cannot become an event, with its reason; it goes to the dead-letter prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    /// Stable label (see `schemas::DecodeError::reason_code`), also the metric label.
    pub reason_code: String,
    /// Human-readable detail.
    pub reason: String,
    pub shard_id: String,
    pub sequence_number: String,
    pub approximate_arrival: DateTime<Utc>,
    pub data: Bytes,
}

/// The result of decoding one batch.
#[derive(Debug, Default)]
pub struct DecodedBatch<'a> {
    /// Unique by `event_id`, in stream order (the first record carrying an ID wins).
    pub events: Vec<DecodedEvent<'a>>,
    pub quarantined: Vec<Quarantined>,
    /// Events dropped because an earlier record in this batch had the same `event_id`.
    pub duplicates_in_batch: usize,
}

/// Decodes every record; never fails as a whole, so one poison record cannot block a shard.
pub fn decode_batch(records: &[InputRecord]) -> DecodedBatch<'_> {
    let mut out = DecodedBatch { events: Vec::with_capacity(records.len()), ..Default::default() };
    let mut seen = foldhash::HashSet::with_capacity_and_hasher(records.len(), Default::default());
    for record in records {
        match decode_record(&record.data) {
            Ok(event) => {
                if seen.insert(event.event_id) {
                    out.events.push(DecodedEvent {
                        event,
                        shard_id: &record.shard_id,
                        sequence_number: &record.sequence_number,
                    });
                } else {
                    out.duplicates_in_batch += 1;
                }
            }
            Err(e) => out.quarantined.push(quarantine(record, e.reason_code(), e.to_string())),
        }
    }
    out
}

/// Builds a dead-letter row for `record`.
pub fn quarantine(record: &InputRecord, reason_code: &str, reason: String) -> Quarantined {
    Quarantined {
        reason_code: reason_code.to_owned(),
        reason,
        shard_id: record.shard_id.clone(),
        sequence_number: record.sequence_number.clone(),
        approximate_arrival: record.approximate_arrival,
        data: record.data.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{event_record, raw_record};

    /// Invariant: poison records are quarantined with a reason and never stop their neighbours.
    #[test]
    fn poison_is_quarantined_neighbours_decode() {
        let good1 = event_record("1", "page_view", None);
        let good2 = event_record("4", "click", None);
        let batch = vec![
            good1,
            raw_record("2", b"not json"),
            raw_record("3", br#"{"v": 9, "event": {}}"#),
            good2,
            raw_record("5", &[0xc3, 0x28]),
        ];
        let decoded = decode_batch(&batch);
        assert_eq!(decoded.events.len(), 2);
        let reasons: Vec<(&str, &str)> =
            decoded.quarantined.iter().map(|q| (q.sequence_number.as_str(), q.reason_code.as_str())).collect();
        assert_eq!(reasons, [("2", "not_json"), ("3", "unknown_version"), ("5", "invalid_utf8")]);
    }

    /// Invariant: within a batch an event_id is kept once, from its first record.
    #[test]
    fn in_batch_duplicates_keep_the_first() {
        let id = uuid::Uuid::new_v4();
        let batch =
            vec![event_record("1", "a", Some(id)), event_record("2", "a", None), event_record("3", "b", Some(id))];
        let decoded = decode_batch(&batch);
        assert_eq!(decoded.duplicates_in_batch, 1);
        assert_eq!(decoded.events.len(), 2);
        assert_eq!(decoded.events[0].sequence_number, "1");
        assert_eq!(decoded.events[0].event.event_type, "a");
    }
}
