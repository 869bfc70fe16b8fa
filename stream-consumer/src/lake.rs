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
    pub decoded: &'a DecodedEvent,
    pub agent: Option<&'a AgentFacts>,
}

/// Encodes rows as one Parquet file. Rows are sorted by event type (then time and ID) so
/// row-group and page statistics on `event_type` let Athena skip data; the sort also makes the
/// bytes deterministic, so a retried batch writes the identical object.
pub fn encode_parquet(rows: &mut [LakeRow<'_>]) -> Result<Bytes, ConsumerError> {
    // Unstable is enough: event IDs are unique in a batch, so no two keys are equal.
    rows.sort_unstable_by(|a, b| {
        let (a, b) = (&a.decoded.event, &b.decoded.event);
        (&a.event_type, a.occurred_at, a.event_id).cmp(&(&b.event_type, b.occurred_at, b.event_id))
    });
    let n = rows.len();
    // Each column's bytes are counted first, so its buffer is allocated once at its final size.
    let s = |f: &dyn for<'r> Fn(&'r LakeRow<'r>) -> Option<&'r str>| -> ArrayRef {
        let bytes = rows.iter().map(|r| f(r).map_or(0, str::len)).sum();
        let mut b = StringBuilder::with_capacity(n, bytes);
        for r in rows.iter() {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let event_id: ArrayRef = {
        let mut b = StringBuilder::with_capacity(n, n * 36);
        let mut text = uuid::Uuid::encode_buffer();
        for r in rows.iter() {
            b.append_value(r.decoded.event.event_id.hyphenated().encode_lower(&mut text));
        }
        Arc::new(b.finish())
    };
    let event_type = s(&|r| Some(&r.decoded.event.event_type));
    let anonymous_id = s(&|r| r.decoded.event.anonymous_id.as_deref());
    let user_id = s(&|r| r.decoded.event.user_id.as_deref());
    let session_id = s(&|r| r.decoded.event.session_id.as_deref());
    let url = s(&|r| r.decoded.event.url.as_deref());
    let referrer = s(&|r| r.decoded.event.referrer.as_deref());
    let user_agent = s(&|r| r.decoded.event.user_agent.as_deref());
    let client_ip = s(&|r| r.decoded.event.client_ip.as_deref());
    let properties = s(&|r| Some(r.decoded.event.properties.json()));
    let browser = s(&|r| r.agent.and_then(|a| a.browser.as_deref()));
    let os = s(&|r| r.agent.and_then(|a| a.os.as_deref()));
    let device_class = s(&|r| Some(r.agent.map_or("other", |a| a.device_class.as_str())));
    let source_shard = s(&|r| Some(&r.decoded.shard_id));
    let source_sequence = s(&|r| Some(&r.decoded.sequence_number));
    let ts = |f: &dyn Fn(&LakeRow<'_>) -> i64| -> ArrayRef {
        let mut b = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        for r in rows.iter() {
            b.append_value(f(r));
        }
        Arc::new(b.finish())
    };
    let occurred_at = ts(&|r| r.decoded.event.occurred_at.timestamp_millis());
    let received_at = ts(&|r| r.decoded.event.received_at.timestamp_millis());
    let mut bot = BooleanBuilder::with_capacity(n);
    for r in rows.iter() {
        bot.append_value(r.agent.is_some_and(|a| a.is_bot));
    }
    let is_bot: ArrayRef = Arc::new(bot.finish());

    let schema = arrow_schema();
    let columns = vec![
        event_id,
        event_type,
        occurred_at,
        received_at,
        anonymous_id,
        user_id,
        session_id,
        url,
        referrer,
        user_agent,
        client_ip,
        properties,
        browser,
        os,
        device_class,
        is_bot,
        source_shard,
        source_sequence,
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| ConsumerError::Encode(e.to_string()))?;
    let props = writer_properties(ROW_GROUP_ROWS);
    let mut buf = Vec::with_capacity(n * 200);
    let mut writer =
        ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(|e| ConsumerError::Encode(e.to_string()))?;
    writer.write(&batch).map_err(|e| ConsumerError::Encode(e.to_string()))?;
    writer.close().map_err(|e| ConsumerError::Encode(e.to_string()))?;
    Ok(Bytes::from(buf))
}

/// The writer settings of every event file, from the consumer and the compactor alike: Snappy,
/// `group_rows` per row group, page statistics, the sort order declared in the footer (engines
/// that read it know the file is sorted), and no dictionary for the columns that are unique or
/// nearly so per row, where a dictionary only costs time before the writer gives it up.
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

    /// Invariant: the sort-key positions name the schema's columns.
    #[test]
    fn sort_key_positions_match_the_schema() {
        let schema = arrow_schema();
        let names: Vec<&str> =
            [EVENT_ID, EVENT_TYPE, OCCURRED_AT].iter().map(|&i| schema.field(i).name().as_str()).collect();
        assert_eq!(names, ["event_id", "event_type", "occurred_at"]);
    }
}
