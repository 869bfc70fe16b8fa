//! Pure lake encoding: events to Parquet bytes (sorted, Snappy) and quarantined records to NDJSON.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use base64::Engine;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use schemas::dynamo::iso_millis;
use schemas::lake::arrow_schema;

use crate::decode::{DecodedEvent, Quarantined};
use crate::enrich::AgentFacts;
use crate::error::ConsumerError;

/// Rows per row group. Large groups keep Athena's per-group overhead low; 128k rows of ~600
/// bytes is ~20–40 MB compressed, near the 64–128 MB Athena guidance once files are compacted.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Column positions in the lake schema of the sort key (and, for the compactor, the dedup key).
pub const EVENT_ID: usize = 0;
pub const EVENT_TYPE: usize = 1;
pub const OCCURRED_AT: usize = 2;

/// One lake row: the event, its stream position and the user-agent facts.
pub struct LakeRow<'a> {
    pub decoded: &'a DecodedEvent<'a>,
    pub agent: Option<&'a AgentFacts>,
}

/// The text columns of the lake schema, in schema order, as [`text_values`] returns them.
const TEXT_COLUMNS: usize = 14;

/// A row's text columns (all but `event_id`, which is formatted from the UUID).
fn text_values<'r>(r: &LakeRow<'r>) -> [Option<&'r str>; TEXT_COLUMNS] {
    let (d, agent) = (r.decoded, r.agent);
    let e = &d.event;
    [
        Some(&e.event_type),
        e.anonymous_id.as_deref(),
        e.user_id.as_deref(),
        e.session_id.as_deref(),
        e.url.as_deref(),
        e.referrer.as_deref(),
        e.user_agent.as_deref(),
        e.client_ip.as_deref(),
        Some(e.properties.json()),
        agent.and_then(|a| a.browser.as_deref()),
        agent.and_then(|a| a.os.as_deref()),
        Some(agent.map_or("other", |a| a.device_class.as_str())),
        Some(d.shard_id),
        Some(d.sequence_number),
    ]
}

/// Encodes rows as one Parquet file. Rows are sorted by event type (then time and ID) so
/// row-group and page statistics on `event_type` let Athena skip data; the sort also makes the
/// bytes deterministic, so a retried batch writes the identical object.
pub fn encode_parquet(rows: &[LakeRow<'_>]) -> Result<Bytes, ConsumerError> {
    let n = rows.len();
    // One pass in stream order (sequential in memory) computes each row's sort key and every
    // column's byte total; the rows are then visited once more, in sorted order, to fill all
    // columns at once. Sorting small keys with the event type as a rank (a batch has a handful
    // of types) avoids chasing each event's strings for every comparison.
    let mut ranks: foldhash::HashMap<&str, u32> = foldhash::HashMap::default();
    let mut keys: Vec<(u32, i64, u32, u128, u32)> = Vec::with_capacity(n);
    let mut bytes = [0usize; TEXT_COLUMNS];
    for (i, r) in rows.iter().enumerate() {
        let e = &r.decoded.event;
        let next = ranks.len() as u32;
        let rank = *ranks.entry(&e.event_type).or_insert(next);
        let t = e.occurred_at;
        keys.push((rank, t.timestamp(), t.timestamp_subsec_nanos(), e.event_id.as_u128(), i as u32));
        for (total, value) in bytes.iter_mut().zip(text_values(r)) {
            *total += value.map_or(0, str::len);
        }
    }
    let order = sorted_by_type(ranks, keys);

    let mut text: Vec<StringBuilder> = bytes.iter().map(|&b| StringBuilder::with_capacity(n, b)).collect();
    let mut event_id = StringBuilder::with_capacity(n, n * 36);
    let mut occurred_at = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut received_at = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut is_bot = BooleanBuilder::with_capacity(n);
    let mut uuid_text = uuid::Uuid::encode_buffer();
    for &i in &order {
        let r = &rows[i as usize];
        let e = &r.decoded.event;
        event_id.append_value(e.event_id.hyphenated().encode_lower(&mut uuid_text));
        occurred_at.append_value(e.occurred_at.timestamp_millis());
        received_at.append_value(e.received_at.timestamp_millis());
        is_bot.append_value(r.agent.is_some_and(|a| a.is_bot));
        for (builder, value) in text.iter_mut().zip(text_values(r)) {
            builder.append_option(value);
        }
    }
    let schema = arrow_schema();
    // The text columns come in schema order (see `text_values`); the others are named.
    let mut text = text.into_iter();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| -> ArrayRef {
            match field.name().as_str() {
                "event_id" => Arc::new(event_id.finish()),
                "occurred_at" => Arc::new(occurred_at.finish()),
                "received_at" => Arc::new(received_at.finish()),
                "is_bot" => Arc::new(is_bot.finish()),
                _ => Arc::new(text.next().expect("one builder per text column").finish()),
            }
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| ConsumerError::Encode(e.to_string()))?;
    let props = writer_properties(ROW_GROUP_ROWS);
    let mut buf = Vec::with_capacity(n * 200);
    let mut writer =
        ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(|e| ConsumerError::Encode(e.to_string()))?;
    writer.write(&batch).map_err(|e| ConsumerError::Encode(e.to_string()))?;
    writer.close().map_err(|e| ConsumerError::Encode(e.to_string()))?;
    Ok(Bytes::from(buf))
}

/// The row order of a file: by event type, then occurrence time and event ID (each key is
/// `(rank of the type in order of appearance, seconds, nanoseconds, event ID, row)`). A counting
/// sort puts the rows in type order first; within a type, rows arrive nearly in time order, and
/// the run-adaptive merge sort finishes that in close to one pass. The same order as sorting the
/// whole keys (event IDs are unique in a batch, so no two keys are equal).
fn sorted_by_type(ranks: foldhash::HashMap<&str, u32>, keys: Vec<(u32, i64, u32, u128, u32)>) -> Vec<u32> {
    // Ranks were handed out in order of appearance; renumber them in name order.
    let mut names: Vec<(&str, u32)> = ranks.into_iter().collect();
    names.sort_unstable();
    let mut order = vec![0usize; names.len()];
    for (sorted, (_, rank)) in names.iter().enumerate() {
        order[*rank as usize] = sorted;
    }
    let mut starts = vec![0usize; names.len() + 1];
    for key in &keys {
        starts[order[key.0 as usize] + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut next = starts.clone();
    let mut by_type = vec![(0i64, 0u32, 0u128, 0u32); keys.len()];
    for (rank, secs, nanos, id, row) in keys {
        let slot = &mut next[order[rank as usize]];
        by_type[*slot] = (secs, nanos, id, row);
        *slot += 1;
    }
    for bounds in starts.windows(2) {
        by_type[bounds[0]..bounds[1]].sort();
    }
    by_type.into_iter().map(|(.., row)| row).collect()
}

/// The columns without statistics: free text and random identifiers. Their values are spread
/// over every file and page alike (the files are sorted by type and time, not by these), so their
/// min and max prune nothing, and computing them compares every value. The sort key, the times,
/// the agent facts and the stream position keep theirs.
pub const UNPRUNED_COLUMNS: [&str; 9] =
    ["event_id", "anonymous_id", "user_id", "session_id", "url", "referrer", "user_agent", "client_ip", "properties"];

/// The writer settings of every event file, from the consumer and the compactor alike: Snappy,
/// `group_rows` per row group, page statistics, the sort order declared in the footer (engines
/// that read it know the file is sorted), no dictionary for the columns that are unique or
/// nearly so per row, where a dictionary only costs time before the writer gives it up, and no
/// statistics for [`UNPRUNED_COLUMNS`].
pub fn writer_properties(group_rows: usize) -> WriterProperties {
    let sorted = |column: usize| SortingColumn { column_idx: column as i32, descending: false, nulls_first: false };
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(group_rows))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(vec![sorted(EVENT_TYPE), sorted(OCCURRED_AT), sorted(EVENT_ID)]));
    for unique in ["event_id", "occurred_at", "received_at", "properties", "source_sequence"] {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(unique), false);
    }
    for unordered in UNPRUNED_COLUMNS {
        builder = builder.set_column_statistics_enabled(ColumnPath::from(unordered), EnabledStatistics::None);
    }
    builder.build()
}

/// Encodes quarantined records as NDJSON: reason, shard, sequence number, arrival time and the
/// raw payload in base64 (it may not be text at all).
pub fn encode_dead_letter(rows: &[Quarantined]) -> Bytes {
    let mut out = Vec::with_capacity(rows.len() * 256);
    for q in rows {
        let line = serde_json::json!({
            "reason_code": q.reason_code,
            "reason": q.reason,
            "shard_id": q.shard_id,
            "sequence_number": q.sequence_number,
            "approximate_arrival": iso_millis(q.approximate_arrival),
            "payload_base64": base64::engine::general_purpose::STANDARD.encode(&q.data),
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMillisecondType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use crate::decode::decode_batch;
    use crate::enrich::parse_agent;
    use crate::testing::{record_of, sample_event, seq};

    /// Invariant: a file holds every row once, sorted by (event_type, occurred_at, event_id),
    /// with each row's columns kept together through the sort; the bytes do not depend on the
    /// order the rows came in (a retried batch writes the identical object); free text carries no
    /// statistics while the sort key does.
    #[test]
    fn rows_are_sorted_whole_and_bytes_are_deterministic() {
        let start = chrono::Utc::now();
        let types = ["search", "click", "page_view", "click"];
        let records: Vec<_> = (0..40)
            .map(|i| {
                // Occurrence times go back and forth, so time order is not stream order.
                let at = start + chrono::Duration::milliseconds(((i * 7) % 11) as i64 * 250);
                record_of(&seq(i), &sample_event(types[i % types.len()], None, at))
            })
            .collect();
        let decoded = decode_batch(&records).events;
        let bot = parse_agent("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
        let rows: Vec<LakeRow<'_>> = decoded
            .iter()
            .enumerate()
            .map(|(i, d)| LakeRow { decoded: d, agent: i.is_multiple_of(3).then_some(&bot) })
            .collect();
        let body = encode_parquet(&rows).unwrap();
        let mut reversed: Vec<LakeRow<'_>> =
            rows.iter().map(|r| LakeRow { decoded: r.decoded, agent: r.agent }).collect();
        reversed.reverse();
        assert_eq!(encode_parquet(&reversed).unwrap(), body, "the input order leaked into the file");

        let builder = ParquetRecordBatchReaderBuilder::try_new(body.clone()).unwrap();
        let meta = builder.metadata().clone();
        let batch = builder.build().unwrap().next().unwrap().unwrap();
        assert_eq!(batch.num_rows(), rows.len());
        let text = |name: &str| batch.column_by_name(name).unwrap().as_string::<i32>().clone();
        let (ids, kinds, seqs) = (text("event_id"), text("event_type"), text("source_sequence"));
        let occurred = batch.column_by_name("occurred_at").unwrap().as_primitive::<TimestampMillisecondType>().clone();
        let is_bot = batch.column_by_name("is_bot").unwrap().as_boolean().clone();
        let keys: Vec<(String, i64, String)> =
            (0..rows.len()).map(|i| (kinds.value(i).to_owned(), occurred.value(i), ids.value(i).to_owned())).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "rows are not sorted by the key: {keys:?}");
        for i in 0..rows.len() {
            // Each row's position in the stream names the event it must hold.
            let d = decoded.iter().find(|d| d.sequence_number == seqs.value(i)).unwrap();
            assert_eq!(ids.value(i), d.event.event_id.to_string());
            assert_eq!(kinds.value(i), &*d.event.event_type);
            assert_eq!(occurred.value(i), d.event.occurred_at.timestamp_millis());
            let index: usize = seqs.value(i).parse().unwrap();
            assert_eq!(is_bot.value(i), index.is_multiple_of(3), "row {i} lost its agent facts");
        }
        let stats = |name: &str| {
            let column = meta.row_group(0).columns().iter().find(|c| c.column_path().string() == name).unwrap();
            column.statistics().is_some()
        };
        for pruned in ["event_type", "occurred_at", "received_at", "source_sequence"] {
            assert!(stats(pruned), "{pruned} lost its statistics");
        }
        for unpruned in UNPRUNED_COLUMNS {
            assert!(!stats(unpruned), "{unpruned} has statistics");
        }
    }

    /// Invariant: the sort-key positions name the schema's columns.
    #[test]
    fn sort_key_positions_match_the_schema() {
        let schema = arrow_schema();
        let names: Vec<&str> =
            [EVENT_ID, EVENT_TYPE, OCCURRED_AT].iter().map(|&i| schema.field(i).name().as_str()).collect();
        assert_eq!(names, ["event_id", "event_type", "occurred_at"]);
    }

    /// Invariant: the counting sort by type and the merge within each type give the order of
    /// sorting whole keys, for any arrival order (ties in time included).
    #[test]
    fn type_buckets_sort_like_whole_keys() {
        let names = ["purchase", "click", "page_view"];
        let mut ranks: foldhash::HashMap<&str, u32> = foldhash::HashMap::default();
        let mut keys = Vec::new();
        for row in 0..500u32 {
            let name = names[fastrand::usize(..names.len())];
            let next = ranks.len() as u32;
            let rank = *ranks.entry(name).or_insert(next);
            keys.push((rank, fastrand::i64(-5..5), fastrand::u32(..3), fastrand::u128(..), row));
        }
        let mut whole: Vec<(&str, i64, u32, u128, u32)> = keys
            .iter()
            .map(|&(rank, s, n, id, row)| (*ranks.iter().find(|(_, r)| **r == rank).unwrap().0, s, n, id, row))
            .collect();
        whole.sort();
        let want: Vec<u32> = whole.iter().map(|k| k.4).collect();
        assert_eq!(sorted_by_type(ranks, keys), want);
    }
}
