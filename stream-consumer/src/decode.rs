//! Decoding a batch of stream records into events, quarantining what cannot be decoded, and in-batch dedup.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use schemas::{EnrichedEvent, decode_record, record_events};

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
    /// The event's line in its record (records pack several events; see `schemas::record_events`).
    pub line: u32,
}

impl DecodedEvent<'_> {
    /// Where the event sits in the stream: its shard, record and line, in stream order.
    pub fn position(&self) -> (&str, &str, u32) {
        (self.shard_id, self.sequence_number, self.line)
    }
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
    /// The bad line of the record (0 for a record of one event).
    pub line: u32,
    pub approximate_arrival: DateTime<Utc>,
    /// The bad line's bytes.
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

/// Decodes every event of every record; never fails as a whole, so one poison line cannot block
/// a shard, nor its neighbours in the same record.
pub fn decode_batch(records: &[InputRecord]) -> DecodedBatch<'_> {
    // Records usually pack tens of events: size for what the bytes suggest, not the record count.
    let guess = records.iter().map(|r| r.data.len()).sum::<usize>() / 400 + records.len();
    let mut out = DecodedBatch { events: Vec::with_capacity(guess), ..Default::default() };
    let mut seen = foldhash::HashSet::with_capacity_and_hasher(guess, Default::default());
    for record in records {
        for (line, data) in record_events(&record.data).enumerate() {
            let line = line as u32;
            match decode_record(data) {
                Ok(event) => {
                    if seen.insert(event.event_id) {
                        out.events.push(DecodedEvent {
                            event,
                            shard_id: &record.shard_id,
                            sequence_number: &record.sequence_number,
                            line,
                        });
                    } else {
                        out.duplicates_in_batch += 1;
                    }
                }
                Err(e) => {
                    let mut q = quarantine(record, e.reason_code(), e.to_string());
                    q.line = line;
                    q.data = record.data.slice_ref(data);
                    out.quarantined.push(q);
                }
            }
        }
    }
    out
}

/// Builds a dead-letter row for the whole of `record`.
pub fn quarantine(record: &InputRecord, reason_code: &str, reason: String) -> Quarantined {
    Quarantined {
        reason_code: reason_code.to_owned(),
        reason,
        shard_id: record.shard_id.clone(),
        sequence_number: record.sequence_number.clone(),
        line: 0,
        approximate_arrival: record.approximate_arrival,
        data: record.data.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{event_record, raw_record, sample_event};

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

    /// Invariant: a record packing several events yields each of them, in order, with its line;
    /// a bad line is quarantined alone (its own bytes and line) and its neighbours still decode.
    #[test]
    fn packed_records_yield_every_line() {
        let now = Utc::now();
        let a = schemas::encode_record(&sample_event("page_view", None, now));
        let b = schemas::encode_record(&sample_event("click", None, now));
        let packed = [&a[..], b"{broken", &b[..], &a[..]].join(&schemas::EVENT_SEPARATOR);
        let batch = vec![raw_record("7", &packed), event_record("8", "signup", None)];
        let decoded = decode_batch(&batch);
        let got: Vec<(&str, u32, &str)> =
            decoded.events.iter().map(|d| (d.sequence_number, d.line, &*d.event.event_type)).collect();
        assert_eq!(got, [("7", 0, "page_view"), ("7", 2, "click"), ("8", 0, "signup")]);
        assert_eq!(decoded.duplicates_in_batch, 1, "line 3 repeats line 0's event");
        assert_eq!(decoded.quarantined.len(), 1);
        let q = &decoded.quarantined[0];
        assert_eq!((q.sequence_number.as_str(), q.line, q.reason_code.as_str()), ("7", 1, "not_json"));
        assert_eq!(&q.data[..], b"{broken");
        assert!(decoded.events.windows(2).all(|w| w[0].position() < w[1].position()), "stream order");
    }

    /// Invariant: an empty record is quarantined, not silently skipped.
    #[test]
    fn an_empty_record_is_quarantined() {
        let batch = [raw_record("1", b"")];
        let decoded = decode_batch(&batch);
        assert!(decoded.events.is_empty());
        assert_eq!(decoded.quarantined.len(), 1);
    }
}
