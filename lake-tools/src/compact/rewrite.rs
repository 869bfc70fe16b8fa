//! Pure Parquet rewriting for compaction: lake files in, one sorted file without duplicate `event_id`s out.
//!
//! Files are read with the parquet crate's Arrow reader and must have exactly the lake schema
//! (`schemas::lake::arrow_schema`); the output is written with the settings of the consumer's
//! files (`schemas::lake_file`), sorted by type like them but then by time
//! (`EventFile::Compacted`), since an hour's rows span enough time for a time order to prune.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use schemas::lake::arrow_schema;
use schemas::visitors::event_visitors;
use uuid::Uuid;

use schemas::lake_file::{
    ANONYMOUS_ID, EVENT_ID, EVENT_TYPE, EventFile, OCCURRED_AT, OLDEST_FILE_COLUMNS, ROW_GROUP_ROWS, SITE, USER_ID,
    writer_properties,
};

use crate::ToolError;

/// Rows decoded per Arrow batch while reading.
const READ_BATCH_ROWS: usize = 8192;

/// Event IDs already placed, each with the index of the file that holds it (a caller-kept list
/// of keys), so a chunk whose rows are all duplicates can say where they are.
pub type Seen = HashMap<u128, usize>;

/// The result of merging one chunk.
#[derive(Debug, Default)]
pub struct Merged {
    /// The Parquet file, or `None` when every row was a duplicate of a row placed earlier.
    pub body: Option<Bytes>,
    pub rows_in: usize,
    pub rows_out: usize,
    pub duplicates: usize,
    /// The holder (see [`Seen`]) of the first duplicate dropped.
    pub duplicate_holder: Option<usize>,
    /// The visitor hashes of the rows written (`schemas::visitors`), for the output's filter.
    pub visitors: Vec<i64>,
}

fn decode_error(key: &str, e: impl std::fmt::Display) -> ToolError {
    ToolError::Parquet { key: key.to_owned(), message: e.to_string() }
}

fn parse_id(key: &str, id: &str) -> Result<u128, ToolError> {
    Uuid::parse_str(id).map(|u| u.as_u128()).map_err(|e| decode_error(key, format!("event_id {id:?}: {e}")))
}

/// The event IDs of one lake file, reading only the `event_id` column.
pub fn event_ids(key: &str, body: Bytes) -> Result<Vec<u128>, ToolError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(body).map_err(|e| decode_error(key, e))?;
    let index = builder
        .schema()
        .fields()
        .iter()
        .position(|f| f.name() == "event_id")
        .ok_or_else(|| decode_error(key, "no event_id column"))?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader =
        builder.with_projection(mask).with_batch_size(READ_BATCH_ROWS).build().map_err(|e| decode_error(key, e))?;
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| decode_error(key, e))?;
        let column =
            batch.column(0).as_string_opt::<i32>().ok_or_else(|| decode_error(key, "event_id is not a string"))?;
        for id in column.iter() {
            ids.push(parse_id(key, id.unwrap_or_default())?);
        }
    }
    Ok(ids)
}

/// One input of a merge: its bytes and parsed footer, so each pass decodes without re-parsing.
struct Input {
    key: String,
    body: Bytes,
    meta: ArrowReaderMetadata,
}

impl Input {
    fn open(key: String, body: Bytes) -> Result<Self, ToolError> {
        let meta = ArrowReaderMetadata::load(&body, ArrowReaderOptions::new()).map_err(|e| decode_error(&key, e))?;
        let expected = arrow_schema();
        let found = meta.schema();
        // Files written before a column was added (`site`, then the clock columns) hold a prefix
        // of the schema: the merge reads their missing columns as null (see `take_column`).
        let known_shape = (OLDEST_FILE_COLUMNS..=expected.fields().len()).contains(&found.fields().len());
        let same = known_shape
            && found
                .fields()
                .iter()
                .zip(expected.fields())
                .all(|(f, e)| f.name() == e.name() && f.data_type() == e.data_type());
        if !same {
            return Err(decode_error(&key, format!("schema {found:?} is not the lake schema")));
        }
        Ok(Input { key, body, meta })
    }

    fn builder(&self) -> ParquetRecordBatchReaderBuilder<Bytes> {
        ParquetRecordBatchReaderBuilder::new_with_metadata(self.body.clone(), self.meta.clone())
    }

    fn rows(&self) -> usize {
        self.meta.metadata().file_metadata().num_rows().max(0) as usize
    }

    /// Decodes exactly the rows `wanted` (ascending), in that order.
    fn read_rows(&self, wanted: &[u32]) -> Result<Vec<RecordBatch>, ToolError> {
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
        for &r in wanted {
            let r = r as usize;
            match ranges.last_mut() {
                Some(last) if last.end == r => last.end += 1,
                _ => ranges.push(r..r + 1),
            }
        }
        let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), self.rows());
        let reader = self
            .builder()
            .with_row_selection(selection)
            .with_batch_size(wanted.len().max(1))
            .build()
            .map_err(|e| decode_error(&self.key, e))?;
        reader.collect::<Result<Vec<_>, _>>().map_err(|e| decode_error(&self.key, e))
    }
}

/// Merges `sources` (key, bytes) into one file sorted by event type, then `occurred_at`, then
/// `event_id`, keeping the first row of each `event_id` not already in `seen` and recording
/// the kept ones under `holder`. Deterministic: the same inputs and `seen` give the same bytes.
///
/// Memory is bounded by the compressed inputs plus about two output row groups, not by the
/// decoded size of everything (about 12 times the compressed size for this schema): the sort
/// reads only the three key columns, then each output row group decodes just its rows from
/// each input (a contiguous range per input, or nearly: every input is sorted by type, and a batch
/// file spans about a second).
pub fn merge(sources: Vec<(String, Bytes)>, seen: &mut Seen, holder: usize) -> Result<Merged, ToolError> {
    merge_in_groups(sources, seen, holder, ROW_GROUP_ROWS)
}

/// [`merge`] with `group_rows` rows per output row group (small in tests, to cross groups).
fn merge_in_groups(
    sources: Vec<(String, Bytes)>,
    seen: &mut Seen,
    holder: usize,
    group_rows: usize,
) -> Result<Merged, ToolError> {
    let inputs = sources.into_iter().map(|(key, body)| Input::open(key, body)).collect::<Result<Vec<_>, _>>()?;
    let keys = sort_keys(&inputs)?;
    let (mut merged, kept) = keep_first(&keys, seen, holder);
    drop(keys);
    if !kept.is_empty() {
        let (body, visitors) = write_sorted(&inputs, &kept, group_rows)?;
        (merged.body, merged.visitors) = (Some(body), visitors);
    }
    Ok(merged)
}

/// A row's place in the merged order: (event type rank, occurred_at, event_id, input, row).
type SortKey = (u32, i64, u128, u32, u32);

/// Step 1: the sort keys of every input row, sorted, reading only the three key columns. Types
/// are interned, then ranked by name; a UUID's u128 orders like its hyphenated lowercase text.
fn sort_keys(inputs: &[Input]) -> Result<Vec<SortKey>, ToolError> {
    let mut types: Vec<String> = Vec::new();
    let mut type_index: HashMap<String, u32> = HashMap::new();
    let mut keys: Vec<SortKey> = Vec::with_capacity(inputs.iter().map(Input::rows).sum());
    for (i, input) in inputs.iter().enumerate() {
        let mask = ProjectionMask::roots(input.meta.parquet_schema(), [EVENT_ID, EVENT_TYPE, OCCURRED_AT]);
        let reader = input
            .builder()
            .with_projection(mask)
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(|e| decode_error(&input.key, e))?;
        let mut row = 0u32;
        for batch in reader {
            let batch = batch.map_err(|e| decode_error(&input.key, e))?;
            // Projected columns keep file order: event_id, event_type, occurred_at.
            let ids = batch.column(0).as_string::<i32>();
            let event_types = batch.column(1).as_string::<i32>();
            let times = batch.column(2).as_primitive::<TimestampMillisecondType>();
            for r in 0..batch.num_rows() {
                let t = event_types.value(r);
                let t = match type_index.get(t) {
                    Some(&t) => t,
                    None => {
                        types.push(t.to_owned());
                        type_index.insert(t.to_owned(), types.len() as u32 - 1);
                        types.len() as u32 - 1
                    }
                };
                keys.push((t, times.value(r), parse_id(&input.key, ids.value(r))?, i as u32, row));
                row += 1;
            }
        }
    }
    let mut order: Vec<u32> = (0..types.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| types[a as usize].cmp(&types[b as usize]));
    let mut rank = vec![0u32; types.len()];
    for (r, &t) in order.iter().enumerate() {
        rank[t as usize] = r as u32;
    }
    for k in &mut keys {
        k.0 = rank[k.0 as usize];
    }
    keys.sort_unstable();
    Ok(keys)
}

/// Step 2: deduplicate. The first row of each event_id wins (rows with one event_id are the
/// same event, and sort next to each other); IDs already in `seen` are dropped. Returns the
/// counts and the kept rows as (input, row), in order.
fn keep_first(keys: &[SortKey], seen: &mut Seen, holder: usize) -> (Merged, Vec<(u32, u32)>) {
    let mut merged = Merged { rows_in: keys.len(), ..Default::default() };
    let mut kept: Vec<(u32, u32)> = Vec::with_capacity(keys.len());
    for &(_, _, id, input, row) in keys {
        match seen.get(&id) {
            Some(&h) => {
                merged.duplicates += 1;
                if h != holder {
                    merged.duplicate_holder.get_or_insert(h);
                }
            }
            None => {
                seen.insert(id, holder);
                kept.push((input, row));
            }
        }
    }
    merged.rows_out = kept.len();
    (merged, kept)
}

/// Step 3: the output file, one row group at a time: decode the group's rows from each input,
/// then lay them out in the sorted order. Also returns the visitors of the rows written.
fn write_sorted(inputs: &[Input], kept: &[(u32, u32)], group_rows: usize) -> Result<(Bytes, Vec<i64>), ToolError> {
    let schema = arrow_schema();
    let output_error = |e: parquet::errors::ParquetError| ToolError::Parquet {
        key: "compaction output".into(),
        message: e.to_string(),
    };
    let mut buf = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut buf, schema.clone(), Some(writer_properties(EventFile::Compacted, group_rows)))
            .map_err(output_error)?;
    let mut wanted: Vec<Vec<u32>> = vec![Vec::new(); inputs.len()];
    let mut visitors = Vec::new();
    for group in kept.chunks(group_rows) {
        let (decoded, picks) = read_group(inputs, group, &mut wanted)?;
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(c, field)| take_column(&decoded, c, field.data_type(), &picks))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| ToolError::Parquet { key: "compaction output".into(), message: e.to_string() })?;
        visitors.extend(batch_visitors(&batch).into_iter().map(|(_, v)| v));
        writer.write(&batch).map_err(output_error)?;
    }
    writer.close().map_err(output_error)?;
    visitors.sort_unstable();
    visitors.dedup();
    Ok((Bytes::from(buf), visitors))
}

/// The visitor columns of some rows: `site`, `anonymous_id`, `user_id` (a file from before
/// `site` has none, and its rows are scoped by the empty site, as the consumer scoped them).
struct VisitorColumns<'a> {
    site: Option<&'a arrow_array::StringArray>,
    anonymous: Option<&'a arrow_array::StringArray>,
    user: Option<&'a arrow_array::StringArray>,
}

impl VisitorColumns<'_> {
    /// (row, visitor hash) for every visitor of every one of `rows` rows.
    fn visitors(&self, rows: usize) -> Vec<(usize, i64)> {
        let mut out = Vec::new();
        for r in 0..rows {
            let found = event_visitors(text_at(self.site, r), text_at(self.anonymous, r), text_at(self.user, r));
            out.extend(found.into_iter().flatten().map(|h| (r, h)));
        }
        out
    }
}

/// Row `r` of a text column, `None` when null or when the file has no such column.
fn text_at(a: Option<&arrow_array::StringArray>, r: usize) -> Option<&str> {
    a.filter(|a| a.is_valid(r)).map(|a| a.value(r))
}

/// The visitor columns of a batch of the lake schema.
fn batch_visitors(batch: &RecordBatch) -> Vec<(usize, i64)> {
    let text = |c: usize| batch.columns().get(c).and_then(|a| a.as_string_opt::<i32>());
    VisitorColumns { site: text(SITE), anonymous: text(ANONYMOUS_ID), user: text(USER_ID) }.visitors(batch.num_rows())
}

/// What one object holds of some visitors: the rows to erase and the visitors of all its rows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VisitorRows {
    /// (event ID, the wanted visitor hashes the row matched), for every row matching one.
    pub matched: Vec<(u128, Vec<i64>)>,
    /// The visitor hashes of every row, deduplicated (for the filter of an object that had none).
    pub visitors: Vec<i64>,
    pub rows: usize,
}

/// Reads the event ID and visitor columns of one lake file and finds the rows of the `wanted`
/// visitors (hashes, `schemas::visitors::visitor_hash`).
pub fn visitor_rows(key: &str, body: Bytes, wanted: &HashSet<i64>) -> Result<VisitorRows, ToolError> {
    let input = Input::open(key.to_owned(), body)?;
    let has_site = input.meta.schema().fields().len() > SITE;
    let columns =
        if has_site { vec![EVENT_ID, ANONYMOUS_ID, USER_ID, SITE] } else { vec![EVENT_ID, ANONYMOUS_ID, USER_ID] };
    let mask = ProjectionMask::roots(input.meta.parquet_schema(), columns);
    let reader = input
        .builder()
        .with_projection(mask)
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(|e| decode_error(key, e))?;
    let mut out = VisitorRows::default();
    let mut all: HashSet<i64> = HashSet::new();
    for batch in reader {
        let batch = batch.map_err(|e| decode_error(key, e))?;
        // Projected columns keep file order: event_id, anonymous_id, user_id[, site].
        let text = |c: usize| batch.columns().get(c).and_then(|a| a.as_string_opt::<i32>());
        let ids = text(0).ok_or_else(|| decode_error(key, "event_id is not a string"))?;
        let columns = VisitorColumns { site: text(3), anonymous: text(1), user: text(2) };
        let mut last: Option<usize> = None;
        for (r, h) in columns.visitors(batch.num_rows()) {
            all.insert(h);
            if !wanted.contains(&h) {
                continue;
            }
            match out.matched.last_mut() {
                Some((_, hashes)) if last == Some(r) => hashes.push(h),
                _ => {
                    out.matched.push((parse_id(key, ids.value(r))?, vec![h]));
                    last = Some(r);
                }
            }
        }
        out.rows += batch.num_rows();
    }
    out.visitors = all.into_iter().collect();
    out.visitors.sort_unstable();
    Ok(out)
}

/// One output group's rows decoded, and where each row (in group order) is among them:
/// (index into the batches, row in that batch).
type DecodedGroup = (Vec<RecordBatch>, Vec<(usize, usize)>);

/// The rows of one output group, decoded from each input (`wanted` is reused scratch space),
/// and for each row in group order where it is among them: (decoded batch, row).
fn read_group(inputs: &[Input], group: &[(u32, u32)], wanted: &mut [Vec<u32>]) -> Result<DecodedGroup, ToolError> {
    for w in wanted.iter_mut() {
        w.clear();
    }
    for &(input, row) in group {
        wanted[input as usize].push(row);
    }
    // Decoded rows, flattened: input i's k-th wanted row is `decoded` row `start[i] + k`.
    let mut decoded: Vec<RecordBatch> = Vec::new();
    let mut located: Vec<(usize, usize)> = Vec::new(); // (batch, row) per decoded row
    let mut start = vec![0usize; inputs.len()];
    for (i, w) in wanted.iter_mut().enumerate() {
        if w.is_empty() {
            continue;
        }
        w.sort_unstable();
        start[i] = located.len();
        for batch in inputs[i].read_rows(w)? {
            let b = decoded.len();
            located.extend((0..batch.num_rows()).map(|r| (b, r)));
            decoded.push(batch);
        }
        if located.len() - start[i] != w.len() {
            return Err(decode_error(&inputs[i].key, "row selection returned the wrong number of rows"));
        }
    }
    let picks = group
        .iter()
        .map(|&(input, row)| {
            let w = &wanted[input as usize];
            let k = w.binary_search(&row).unwrap_or_default();
            located[start[input as usize] + k]
        })
        .collect();
    Ok((decoded, picks))
}

/// Column `c` of the rows `picks` ((batch, row) pairs), as one array.
fn take_column(
    batches: &[RecordBatch],
    c: usize,
    data_type: &DataType,
    picks: &[(usize, usize)],
) -> Result<ArrayRef, ToolError> {
    let n = picks.len();
    Ok(match data_type {
        DataType::Utf8 => {
            let mut b = StringBuilder::with_capacity(n, n * 32);
            for &(bi, r) in picks {
                // A file from before the column was added has fewer columns: null.
                let Some(a) = batches[bi].columns().get(c).map(|a| a.as_string::<i32>()) else {
                    b.append_null();
                    continue;
                };
                b.append_option(a.is_valid(r).then(|| a.value(r)));
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(TimeUnit::Millisecond, tz) => {
            let mut b = TimestampMillisecondBuilder::with_capacity(n).with_timezone_opt(tz.clone());
            for &(bi, r) in picks {
                // As for text: a file from before the column (`original_occurred_at`, `sent_at`).
                let Some(a) = batches[bi].columns().get(c).map(|a| a.as_primitive::<TimestampMillisecondType>()) else {
                    b.append_null();
                    continue;
                };
                b.append_option(a.is_valid(r).then(|| a.value(r)));
            }
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(n);
            for &(bi, r) in picks {
                let a = batches[bi].column(c).as_boolean();
                b.append_option(a.is_valid(r).then(|| a.value(r)));
            }
            Arc::new(b.finish())
        }
        other => {
            return Err(ToolError::Parquet {
                key: "compaction output".into(),
                message: format!("lake column {c} has unsupported type {other}"),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::lake_file::{COUNTRY, ORIGINAL_OCCURRED_AT, SITE};
    use stream_consumer::decode::decode_batch;
    use stream_consumer::enrich::parse_agent;
    use stream_consumer::lake::{LakeRow, encode_parquet};
    use stream_consumer::testing::event_record;

    fn file(types: &[&str], ids: &[Option<Uuid>]) -> Bytes {
        let records: Vec<_> =
            types.iter().zip(ids).enumerate().map(|(i, (t, id))| event_record(&i.to_string(), t, *id)).collect();
        let decoded = decode_batch(&records).events;
        let agent = parse_agent("Mozilla/5.0");
        let rows: Vec<LakeRow<'_>> = decoded.iter().map(|d| LakeRow { decoded: d, agent: Some(&agent) }).collect();
        encode_parquet(&rows).unwrap()
    }

    fn column(body: &Bytes, name: &str) -> Vec<String> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(body.clone()).unwrap().build().unwrap();
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let a = batch.column_by_name(name).unwrap().as_string::<i32>().clone();
            out.extend((0..a.len()).map(|i| a.value(i).to_owned()));
        }
        out
    }

    /// The same rows as a file written with only the first `columns` columns of the schema.
    fn with_columns(body: &Bytes, columns: usize) -> Bytes {
        let reader = ParquetRecordBatchReaderBuilder::try_new(body.clone()).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> =
            reader.map(|b| b.unwrap().project(&(0..columns).collect::<Vec<_>>()).unwrap()).collect();
        let mut buf = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut buf, batches[0].schema(), None).unwrap();
        for b in &batches {
            writer.write(b).unwrap();
        }
        writer.close().unwrap();
        Bytes::from(buf)
    }

    /// Invariant: files from before the `site` column still compact, next to new ones; their
    /// rows come out with a null `site`, in a file of the current schema.
    #[test]
    fn files_from_before_the_site_column_merge_with_null_site() {
        let old = with_columns(&file(&["click", "purchase"], &[None, None]), SITE);
        assert_eq!(ArrowReaderMetadata::load(&old, ArrowReaderOptions::new()).unwrap().schema().fields().len(), SITE);
        let new = file(&["click"], &[None]);
        let merged = merge(vec![("old".into(), old), ("new".into(), new)], &mut Seen::new(), 1).unwrap();
        assert_eq!((merged.rows_in, merged.rows_out), (3, 3));
        let body = merged.body.unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(body).unwrap().build().unwrap();
        let batch = reader.map(Result::unwrap).next().unwrap();
        assert_eq!(batch.schema(), arrow_schema());
        assert_eq!(batch.column(SITE).null_count(), 3);
    }

    /// Invariant: files from before the clock columns (`original_occurred_at`, `sent_at`) compact
    /// next to files of the current schema and files from before `site`; their rows read null
    /// there, and the current file's values survive the merge.
    #[test]
    fn files_from_before_the_clock_columns_merge_with_nulls() {
        let before_site = with_columns(&file(&["click"], &[None]), SITE);
        let before_clock = with_columns(&file(&["click", "purchase"], &[None, None]), ORIGINAL_OCCURRED_AT);
        assert_eq!(
            ArrowReaderMetadata::load(&before_clock, ArrowReaderOptions::new()).unwrap().schema().fields().len(),
            ORIGINAL_OCCURRED_AT
        );
        // A current file whose event the producer corrected for its client's clock.
        let mut corrected = stream_consumer::testing::sample_event("search", None, chrono::Utc::now());
        let sent = corrected.received_at + chrono::Duration::days(400);
        (corrected.original_occurred_at, corrected.sent_at) = (Some(corrected.occurred_at), Some(sent));
        corrected.site = Some("local-demo".into());
        let records = [stream_consumer::testing::record_of("1", &corrected)];
        let decoded = decode_batch(&records).events;
        let new = encode_parquet(&[LakeRow { decoded: &decoded[0], agent: None }]).unwrap();
        let inputs = vec![("a".into(), before_site), ("b".into(), before_clock), ("c".into(), new)];
        let merged = merge(inputs, &mut Seen::new(), 1).unwrap();
        assert_eq!((merged.rows_in, merged.rows_out), (4, 4));
        let reader = ParquetRecordBatchReaderBuilder::try_new(merged.body.unwrap()).unwrap().build().unwrap();
        let batch = reader.map(Result::unwrap).next().unwrap();
        assert_eq!(batch.schema(), arrow_schema());
        let sent_at = ORIGINAL_OCCURRED_AT + 1;
        // The fixture events of the older files name no site; the current file's does.
        assert_eq!(batch.column(SITE).null_count(), 3);
        // Rows sorted by type: click, click, purchase, search (the current file's, last).
        let got = batch.column(sent_at).as_primitive::<TimestampMillisecondType>();
        assert_eq!((got.null_count(), got.value(3)), (3, sent.timestamp_millis()));
        assert_eq!(batch.column(ORIGINAL_OCCURRED_AT).null_count(), 3);
    }

    /// Invariant: files from before the `country` column (#23) compact next to current ones;
    /// their rows read null there and the current file's country survives the merge.
    #[test]
    fn files_from_before_the_country_column_merge_with_null_country() {
        let old = with_columns(&file(&["click", "purchase"], &[None, None]), COUNTRY);
        assert_eq!(
            ArrowReaderMetadata::load(&old, ArrowReaderOptions::new()).unwrap().schema().fields().len(),
            COUNTRY
        );
        let mut located = stream_consumer::testing::sample_event("search", None, chrono::Utc::now());
        located.country = Some("NZ".into());
        let records = [stream_consumer::testing::record_of("1", &located)];
        let decoded = decode_batch(&records).events;
        let new = encode_parquet(&[LakeRow { decoded: &decoded[0], agent: None }]).unwrap();
        let merged = merge(vec![("old".into(), old), ("new".into(), new)], &mut Seen::new(), 1).unwrap();
        assert_eq!((merged.rows_in, merged.rows_out), (3, 3));
        let reader = ParquetRecordBatchReaderBuilder::try_new(merged.body.unwrap()).unwrap().build().unwrap();
        let batch = reader.map(Result::unwrap).next().unwrap();
        assert_eq!(batch.schema(), arrow_schema());
        // Rows sorted by type: click, purchase (the old file's), search (the current one's).
        let country = batch.column(COUNTRY).as_string::<i32>();
        assert_eq!((country.null_count(), country.value(2)), (2, "NZ"));
    }

    /// Invariant: a merge keeps every event once, sorted by type, and drops repeated event_ids.
    #[test]
    fn merge_sorts_and_drops_duplicates() {
        let shared = Uuid::new_v4();
        let a = file(&["purchase", "click"], &[Some(shared), None]);
        let b = file(&["purchase", "add_to_cart", "click"], &[Some(shared), None, None]);
        let mut seen = Seen::new();
        let merged = merge(vec![("a".into(), a.clone()), ("b".into(), b)], &mut seen, 7).unwrap();
        assert_eq!((merged.rows_in, merged.rows_out, merged.duplicates), (5, 4, 1));
        let body = merged.body.unwrap();
        assert_eq!(column(&body, "event_type"), ["add_to_cart", "click", "click", "purchase"]);
        assert_eq!(seen.len(), 4);
        assert!(seen.values().all(|&h| h == 7));
        let mut ids = column(&body, "event_id");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4);
        assert_eq!(event_ids("x", body.clone()).unwrap().len(), 4);
        // Deterministic bytes: the same inputs produce the same file.
        let again = merge(vec![("a".into(), a.clone())], &mut Seen::new(), 0).unwrap().body.unwrap();
        assert_eq!(again, merge(vec![("a".into(), a.clone())], &mut Seen::new(), 0).unwrap().body.unwrap());
        // Everything already placed elsewhere: no file, and where the rows are.
        let nothing = merge(vec![("a".into(), a)], &mut seen, 8).unwrap();
        assert!(nothing.body.is_none());
        assert_eq!(nothing.duplicate_holder, Some(7));
    }

    /// Invariant: output row groups gather the right rows from every input (sorted, each once).
    #[test]
    fn rows_are_gathered_across_row_groups_and_inputs() {
        let types = ["view", "click", "buy", "view", "click", "add", "view"];
        let sources: Vec<(String, Bytes)> =
            (0..4).map(|i| (format!("f{i}"), file(&types[i..], &[None; 7][i..]))).collect();
        let all: usize = (0..4).map(|i| types.len() - i).sum();
        let merged = merge_in_groups(sources.clone(), &mut Seen::new(), 0, 3).unwrap();
        assert_eq!((merged.rows_in, merged.rows_out, merged.duplicates), (all, all, 0));
        let body = merged.body.unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(body.clone()).unwrap().metadata().clone();
        assert_eq!(meta.num_row_groups(), all.div_ceil(3));
        let got = column(&body, "event_type");
        let mut want: Vec<String> = got.clone();
        want.sort();
        assert_eq!(got, want, "sorted by type across row groups");
        let mut ids = column(&body, "event_id");
        let mut expected: Vec<String> = sources
            .into_iter()
            .flat_map(|(k, b)| event_ids(&k, b).unwrap())
            .map(|u| Uuid::from_u128(u).to_string())
            .collect();
        ids.sort();
        expected.sort();
        assert_eq!(ids, expected, "every input row once");
    }

    #[test]
    fn foreign_files_are_refused() {
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new("x", DataType::Utf8, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(arrow_array::StringArray::from(vec!["a"]))]).unwrap();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let err = merge(vec![("foreign".into(), Bytes::from(buf))], &mut Seen::new(), 0).unwrap_err();
        assert!(err.to_string().contains("foreign"), "{err}");
    }
}
