//! The lake's Parquet file settings, shared by every writer of event files (the consumer's batch
//! files, the lake tools' compacted and rewritten files): row order, row groups, dictionaries and
//! statistics. Behind the `parquet` feature, so the producer does not compile a Parquet writer.

use parquet::basic::Compression;
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Rows per row group. Large groups keep Athena's per-group overhead low; 128k rows of ~600
/// bytes is ~20–40 MB compressed, near the 64–128 MB Athena guidance once files are compacted.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Column positions in the lake schema of the sort key (and, for the compactor, the dedup key).
pub const EVENT_ID: usize = 0;
pub const EVENT_TYPE: usize = 1;
pub const OCCURRED_AT: usize = 2;
/// The visitor columns (with [`SITE`]): what erasure matches rows by.
pub const ANONYMOUS_ID: usize = 4;
pub const USER_ID: usize = 5;
pub const SOURCE_SHARD: usize = 16;
pub const SOURCE_SEQUENCE: usize = 17;
/// The last column, added with sites: files written before it have 18 columns, a prefix of the
/// schema (readers fill `site` with null for them).
pub const SITE: usize = 18;
/// The first of the columns added with clock correction (`original_occurred_at`, `sent_at`):
/// files written before them have 19 columns, again a prefix of the schema.
pub const ORIGINAL_OCCURRED_AT: usize = 19;
/// The column added with tracking plans; files written before it have 21 columns.
pub const PLAN_VIOLATIONS: usize = 21;
/// The column added with the country lookup; files written before it have 22 columns.
pub const COUNTRY: usize = 22;
/// The fewest columns an event file may have: the schema before `site`. Every file holds a prefix
/// of the schema at least this long, and readers fill the missing columns with null.
pub const OLDEST_FILE_COLUMNS: usize = SITE;

/// The two kinds of event file. Their settings differ where their sizes make a difference: a
/// batch file holds about a second of one shard, a compacted file an hour of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFile {
    /// One batch and partition, written by the consumer (`stream_consumer::lake::encode_parquet`).
    Batch,
    /// One hour's batch files merged by the compactor.
    Compacted,
}

impl EventFile {
    /// The row order, declared in the footer: for batch files event type, then stream position
    /// (shard and sequence number, compared as text, as Parquet compares them); for compacted
    /// files event type, then occurrence time, then event ID.
    pub fn order(self) -> [usize; 3] {
        match self {
            EventFile::Batch => [EVENT_TYPE, SOURCE_SHARD, SOURCE_SEQUENCE],
            EventFile::Compacted => [EVENT_TYPE, OCCURRED_AT, EVENT_ID],
        }
    }
}

/// The columns without statistics: free text and random identifiers. Their values are spread
/// over every file and page alike (the files are sorted by type and time, not by these), so their
/// min and max prune nothing, and computing them compares every value. The sort key, the times,
/// the agent facts and the stream position keep theirs.
pub const UNPRUNED_COLUMNS: [&str; 11] = [
    "event_id",
    "anonymous_id",
    "user_id",
    "session_id",
    "url",
    "referrer",
    "user_agent",
    "client_ip",
    "properties",
    "plan_violations",
    // Two hundred-odd values spread over every file and page (visitors from everywhere in every
    // second), so a page's min and max span the alphabet.
    "country",
];

/// A visitor's identifiers. They recur within an hour but seldom within the second a batch
/// spans, so only compacted files keep them in a dictionary: in a batch file the dictionary would
/// hold nearly every value once, and interning each one cost more time than the file's plain
/// values cost space (they came out smaller after Snappy).
pub const PER_VISITOR_COLUMNS: [&str; 4] = ["anonymous_id", "user_id", "session_id", "client_ip"];

/// The writer settings of every event file, from the consumer and the compactor alike: Snappy,
/// `group_rows` per row group, page statistics, the kind's row order declared in the footer
/// (engines that read it know the file is sorted), no dictionary for the columns that are unique
/// or nearly so per row (nor, in batch files, for [`PER_VISITOR_COLUMNS`]), where a dictionary
/// only costs time before the writer gives it up, and no statistics for [`UNPRUNED_COLUMNS`].
pub fn writer_properties(kind: EventFile, group_rows: usize) -> WriterProperties {
    let sorted = |column: usize| SortingColumn { column_idx: column as i32, descending: false, nulls_first: false };
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(group_rows))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(kind.order().into_iter().map(sorted).collect()));
    let per_visitor: &[&str] = if kind == EventFile::Batch { &PER_VISITOR_COLUMNS } else { &[] };
    let unique_per_row =
        ["event_id", "occurred_at", "received_at", "original_occurred_at", "sent_at", "properties", "source_sequence"];
    for unique in unique_per_row.iter().chain(per_visitor) {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(*unique), false);
    }
    for unordered in UNPRUNED_COLUMNS {
        builder = builder.set_column_statistics_enabled(ColumnPath::from(unordered), EnabledStatistics::None);
    }
    builder.build()
}
