//! Pure lake encoding: events to Parquet bytes (sorted, Snappy) and quarantined records to NDJSON.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use base64::Engine;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use schemas::dynamo::iso_millis;
use schemas::lake::arrow_schema;
use schemas::lake_file::{EventFile, ROW_GROUP_ROWS, writer_properties};

use crate::decode::{DecodedEvent, Quarantined};
use crate::enrich::AgentFacts;
use crate::error::ConsumerError;

/// One lake row: the event, its stream position and the user-agent facts.
pub struct LakeRow<'a> {
    pub decoded: &'a DecodedEvent<'a>,
    pub agent: Option<&'a AgentFacts>,
}

/// The text columns of the lake schema, in schema order, as [`text_values`] returns them.
const TEXT_COLUMNS: usize = 17;

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
        e.site.as_deref(),
        e.plan_violations.as_deref(),
        e.country.as_deref(),
    ]
}

/// The columns of one event type's rows, as the writer takes them.
struct Columns {
    text: Vec<StringBuilder>,
    event_id: StringBuilder,
    occurred_at: TimestampMillisecondBuilder,
    received_at: TimestampMillisecondBuilder,
    is_bot: BooleanBuilder,
    /// Null unless the producer corrected `occurred_at` for the client's clock.
    original_occurred_at: TimestampMillisecondBuilder,
    sent_at: TimestampMillisecondBuilder,
}

impl Columns {
    /// Room for `rows` rows whose text columns hold `bytes` bytes each, allocated once.
    fn with_capacity(rows: usize, bytes: &[usize; TEXT_COLUMNS]) -> Self {
        Columns {
            text: bytes.iter().map(|&b| StringBuilder::with_capacity(rows, b)).collect(),
            event_id: StringBuilder::with_capacity(rows, rows * EVENT_ID_LEN),
            occurred_at: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            received_at: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            is_bot: BooleanBuilder::with_capacity(rows),
            original_occurred_at: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            sent_at: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
        }
    }

    fn append(&mut self, r: &LakeRow<'_>, uuid_text: &mut [u8]) {
        let e = &r.decoded.event;
        self.event_id.append_value(e.event_id.hyphenated().encode_lower(uuid_text));
        self.occurred_at.append_value(e.occurred_at.timestamp_millis());
        self.received_at.append_value(e.received_at.timestamp_millis());
        self.is_bot.append_value(r.agent.is_some_and(|a| a.is_bot));
        self.original_occurred_at.append_option(e.original_occurred_at.map(|t| t.timestamp_millis()));
        self.sent_at.append_option(e.sent_at.map(|t| t.timestamp_millis()));
        for (builder, value) in self.text.iter_mut().zip(text_values(r)) {
            builder.append_option(value);
        }
    }

    fn finish(self) -> Result<RecordBatch, ConsumerError> {
        let Columns {
            text,
            mut event_id,
            mut occurred_at,
            mut received_at,
            mut is_bot,
            mut original_occurred_at,
            mut sent_at,
        } = self;
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
                    "original_occurred_at" => Arc::new(original_occurred_at.finish()),
                    "sent_at" => Arc::new(sent_at.finish()),
                    _ => Arc::new(text.next().expect("one builder per text column").finish()),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).map_err(|e| ConsumerError::Encode(e.to_string()))
    }
}

/// Length of a hyphenated UUID.
const EVENT_ID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

/// Encodes the rows of one batch file as Parquet, sorted as [`EventFile::Batch`] says: event type,
/// then stream position. Row-group and page statistics on `event_type` let Athena skip data;
/// the sort makes the bytes deterministic, so a retried batch writes the identical object.
///
/// Rows come in stream order (the handler keeps it), which is then the order within each type
/// as well: the columns are filled in one pass in that order, one set of columns per type, each
/// record read once, right after its neighbour. Sorting each type by time instead visited the
/// records far apart and made filling the columns a fifth slower, for nothing: a batch file
/// spans about a second of the stream, so a time order inside it prunes nothing the file's own
/// statistics do not. (The compactor's hour files are sorted by time within each type,
/// [`EventFile::Compacted`].) Rows that come in another order are sorted first.
pub fn encode_parquet(rows: &[LakeRow<'_>]) -> Result<Bytes, ConsumerError> {
    let n = rows.len();
    let position = |i: u32| rows[i as usize].decoded.position();
    let mut order: Vec<u32> = (0..n as u32).collect();
    if !order.windows(2).all(|w| position(w[0]) < position(w[1])) {
        order.sort_by_key(|&i| position(i));
    }
    // One pass for each row's type and each type's column sizes, so that every builder is
    // allocated once at its final size. Types are numbered in order of appearance.
    let mut index: foldhash::HashMap<&str, usize> = foldhash::HashMap::default();
    let mut types: Vec<(&str, usize, [usize; TEXT_COLUMNS])> = Vec::new();
    let mut type_of = Vec::with_capacity(n);
    for &i in &order {
        let r = &rows[i as usize];
        let event_type = &*r.decoded.event.event_type;
        let t = *index.entry(event_type).or_insert_with(|| {
            types.push((event_type, 0, [0; TEXT_COLUMNS]));
            types.len() - 1
        });
        let (_, count, bytes) = &mut types[t];
        *count += 1;
        for (total, value) in bytes.iter_mut().zip(text_values(r)) {
            *total += value.map_or(0, str::len);
        }
        type_of.push(t);
    }
    let mut columns: Vec<Columns> = types.iter().map(|(_, rows, bytes)| Columns::with_capacity(*rows, bytes)).collect();
    let mut uuid_text = uuid::Uuid::encode_buffer();
    for (&i, &t) in order.iter().zip(&type_of) {
        columns[t].append(&rows[i as usize], &mut uuid_text);
    }
    let mut by_name: Vec<(&str, Columns)> = types.iter().map(|(name, ..)| *name).zip(columns).collect();
    by_name.sort_unstable_by_key(|(name, _)| *name);

    let props = writer_properties(EventFile::Batch, ROW_GROUP_ROWS);
    let mut buf = Vec::with_capacity(n * 200);
    let mut writer = ArrowWriter::try_new(&mut buf, arrow_schema(), Some(props))
        .map_err(|e| ConsumerError::Encode(e.to_string()))?;
    // One Arrow batch per type, in name order: the writer appends them to the same row group.
    for (_, columns) in by_name {
        writer.write(&columns.finish()?).map_err(|e| ConsumerError::Encode(e.to_string()))?;
    }
    writer.close().map_err(|e| ConsumerError::Encode(e.to_string()))?;
    Ok(Bytes::from(buf))
}

/// Encodes quarantined records as NDJSON: reason, shard, sequence number, line in the record,
/// arrival time and the raw payload of that line in base64 (it may not be text at all).
pub fn encode_dead_letter(rows: &[Quarantined]) -> Bytes {
    let mut out = Vec::with_capacity(rows.len() * 256);
    for q in rows {
        let line = serde_json::json!({
            "reason_code": q.reason_code,
            "reason": q.reason,
            "shard_id": q.shard_id,
            "sequence_number": q.sequence_number,
            "line": q.line,
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
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMillisecondType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use schemas::lake_file::{
        EVENT_ID, EVENT_TYPE, OCCURRED_AT, PER_VISITOR_COLUMNS, SOURCE_SEQUENCE, SOURCE_SHARD, UNPRUNED_COLUMNS,
    };

    use crate::decode::decode_batch;
    use crate::enrich::parse_agent;
    use crate::testing::{record_of, sample_event, seq};

    /// Invariant: a batch file holds every row once, sorted by (event_type, shard, sequence
    /// number) as its footer declares, with each row's columns kept together through the sort;
    /// the bytes do not depend on the order the rows came in (a retried batch writes the
    /// identical object); free text carries no statistics while the sort key does; per-visitor
    /// identifiers are stored without a dictionary, the agent facts with one.
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
        let mut shuffled: Vec<LakeRow<'_>> =
            rows.iter().map(|r| LakeRow { decoded: r.decoded, agent: r.agent }).collect();
        fastrand::Rng::with_seed(3).shuffle(&mut shuffled);
        assert_eq!(encode_parquet(&shuffled).unwrap(), body, "the input order leaked into the file");

        let builder = ParquetRecordBatchReaderBuilder::try_new(body.clone()).unwrap();
        let meta = builder.metadata().clone();
        let batch = builder.build().unwrap().next().unwrap().unwrap();
        assert_eq!(batch.num_rows(), rows.len());
        let text = |name: &str| batch.column_by_name(name).unwrap().as_string::<i32>().clone();
        let (ids, kinds, shards, seqs) =
            (text("event_id"), text("event_type"), text("source_shard"), text("source_sequence"));
        let occurred = batch.column_by_name("occurred_at").unwrap().as_primitive::<TimestampMillisecondType>().clone();
        let is_bot = batch.column_by_name("is_bot").unwrap().as_boolean().clone();
        let keys: Vec<(&str, &str, &str)> =
            (0..rows.len()).map(|i| (kinds.value(i), shards.value(i), seqs.value(i))).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "rows are not sorted by the key: {keys:?}");
        let declared: Vec<(i32, bool)> =
            meta.row_group(0).sorting_columns().unwrap().iter().map(|c| (c.column_idx, c.descending)).collect();
        assert_eq!(
            declared,
            [(EVENT_TYPE as i32, false), (SOURCE_SHARD as i32, false), (SOURCE_SEQUENCE as i32, false)]
        );
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
        let dictionary = |name: &str| {
            let column = meta.row_group(0).columns().iter().find(|c| c.column_path().string() == name).unwrap();
            column.dictionary_page_offset().is_some()
        };
        for per_visitor in PER_VISITOR_COLUMNS {
            assert!(!dictionary(per_visitor), "{per_visitor} has a dictionary");
        }
        for repeated in ["event_type", "user_agent", "browser", "device_class", "source_shard"] {
            assert!(dictionary(repeated), "{repeated} has no dictionary");
        }
    }

    /// Invariant: a clock-corrected event's lake row keeps the client's `occurred_at` and
    /// `sent_at` next to the corrected time; an uncorrected one has nulls there.
    #[test]
    fn clock_correction_reaches_the_lake_row() {
        let received = chrono::Utc::now();
        let mut corrected = sample_event("click", None, received);
        corrected.original_occurred_at = Some(corrected.occurred_at + chrono::Duration::days(400));
        corrected.sent_at = Some(received + chrono::Duration::days(400));
        let plain = sample_event("page_view", None, received);
        let records = [record_of(&seq(1), &corrected), record_of(&seq(2), &plain)];
        let decoded = decode_batch(&records).events;
        let rows: Vec<LakeRow<'_>> = decoded.iter().map(|d| LakeRow { decoded: d, agent: None }).collect();
        let body = encode_parquet(&rows).unwrap();
        let batch = ParquetRecordBatchReaderBuilder::try_new(body).unwrap().build().unwrap().next().unwrap().unwrap();
        let millis = |name: &str| {
            let column = batch.column_by_name(name).unwrap().as_primitive::<TimestampMillisecondType>();
            (0..2).map(|i| column.is_valid(i).then(|| column.value(i))).collect::<Vec<_>>()
        };
        // Rows are sorted by type: click, then page_view.
        assert_eq!(
            millis("original_occurred_at"),
            [corrected.original_occurred_at.map(|t| t.timestamp_millis()), None]
        );
        assert_eq!(millis("sent_at"), [corrected.sent_at.map(|t| t.timestamp_millis()), None]);
        assert_eq!(millis("occurred_at")[0], Some(corrected.occurred_at.timestamp_millis()));
    }

    /// Invariant: a warned event's violations reach its lake row as they left the producer; a
    /// clean event's row has null there.
    #[test]
    fn plan_violations_reach_the_lake_row() {
        let received = chrono::Utc::now();
        let mut warned = sample_event("search", None, received);
        let violations =
            r#"[{"pointer":"/properties/query","rule":"required","message":""query" is a required property"}]"#;
        warned.plan_violations = Some(violations.into());
        let clean = sample_event("click", None, received);
        let records = [record_of(&seq(1), &warned), record_of(&seq(2), &clean)];
        let decoded = decode_batch(&records).events;
        assert_eq!(decoded.len(), 2, "both records decode");
        let rows: Vec<LakeRow<'_>> = decoded.iter().map(|d| LakeRow { decoded: d, agent: None }).collect();
        let body = encode_parquet(&rows).unwrap();
        let batch = ParquetRecordBatchReaderBuilder::try_new(body).unwrap().build().unwrap().next().unwrap().unwrap();
        let column = batch.column_by_name("plan_violations").unwrap().as_string::<i32>();
        // Rows are sorted by type: click, then search.
        assert!(column.is_null(0));
        assert_eq!(column.value(1), violations);
    }

    /// Invariant: the producer's country lookup reaches the lake's last column; an event without
    /// one (lookup off, unknown address, older record) has null there.
    #[test]
    fn country_reaches_the_last_lake_column() {
        let received = chrono::Utc::now();
        let mut located = sample_event("search", None, received);
        located.country = Some("NZ".into());
        let unlocated = sample_event("click", None, received);
        let records = [record_of(&seq(1), &located), record_of(&seq(2), &unlocated)];
        let decoded = decode_batch(&records).events;
        let rows: Vec<LakeRow<'_>> = decoded.iter().map(|d| LakeRow { decoded: d, agent: None }).collect();
        let body = encode_parquet(&rows).unwrap();
        let batch = ParquetRecordBatchReaderBuilder::try_new(body).unwrap().build().unwrap().next().unwrap().unwrap();
        assert_eq!(batch.schema().fields().last().unwrap().name(), "country");
        let column = batch.column(schemas::lake_file::COUNTRY).as_string::<i32>();
        // Rows are sorted by type: click, then search.
        assert!(column.is_null(0));
        assert_eq!(column.value(1), "NZ");
    }

    /// Invariant: the sort-key positions name the schema's columns.
    #[test]
    fn sort_key_positions_match_the_schema() {
        let schema = arrow_schema();
        let names: Vec<&str> = [EVENT_ID, EVENT_TYPE, OCCURRED_AT, SOURCE_SHARD, SOURCE_SEQUENCE]
            .iter()
            .map(|&i| schema.field(i).name().as_str())
            .collect();
        assert_eq!(names, ["event_id", "event_type", "occurred_at", "source_shard", "source_sequence"]);
    }
}
