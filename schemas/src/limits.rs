//! Named limits of the contract; the JSON Schema, the API and the docs quote these numbers.

/// Largest accepted event, serialized as compact JSON, in bytes (32 KiB).
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Largest stream record, in bytes: room for the server facts and the envelope on top of a
/// maximal client event. The consumer quarantines anything larger unread.
pub const MAX_RECORD_BYTES: usize = MAX_EVENT_BYTES + 4 * 1024;
/// Most events in one request and in one `PutRecords` call (the Kinesis limit is also 500).
pub const MAX_BATCH_EVENTS: usize = 500;
/// Largest request body after decompression, in bytes (1 MiB).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Longest `event_type`, in characters.
pub const MAX_EVENT_TYPE_LEN: usize = 64;
/// Longest identifier (`anonymous_id`, `user_id`, `session_id`), in characters.
pub const MAX_ID_LEN: usize = 128;
/// Longest `url` / `referrer`, in characters.
pub const MAX_URL_LEN: usize = 2048;
/// Longest `user_agent`, in characters.
pub const MAX_USER_AGENT_LEN: usize = 512;
/// Largest `properties` object, serialized as compact JSON, in bytes (8 KiB).
pub const MAX_PROPERTIES_BYTES: usize = 8 * 1024;
/// Deepest nesting inside `properties` (the `properties` object itself is depth 1).
pub const MAX_PROPERTIES_DEPTH: usize = 5;
/// Most keys in any one object inside `properties`.
pub const MAX_PROPERTIES_KEYS: usize = 50;
/// Most items in any array inside `properties`.
pub const MAX_PROPERTIES_ARRAY_ITEMS: usize = 100;
/// Longest key inside `properties`, in characters.
pub const MAX_PROPERTY_KEY_LEN: usize = 128;
/// Longest string value inside `properties`, in characters.
pub const MAX_PROPERTY_STRING_LEN: usize = 1024;
/// How far ahead of `received_at` an `occurred_at` may be once corrected for the client's clock
/// (see `sent_at`), in seconds (10 minutes). What is left after the correction is the drift
/// between the client's two readings of its own clock, which is seconds, not hours.
pub const MAX_FUTURE_SKEW_SECS: i64 = 10 * 60;
/// How far behind `received_at` a corrected `occurred_at` may be by default, in seconds (31 days):
/// an offline queue's life, and no longer than a month's reports stay open. The producer's
/// `MAX_EVENT_AGE_DAYS` overrides it.
pub const DEFAULT_MAX_EVENT_AGE_SECS: i64 = 31 * 24 * 3600;
/// Most tracking-plan violations a warned event carries (`plan_violations`); the first ones are kept.
pub const MAX_PLAN_VIOLATIONS: usize = 5;
/// Largest `plan_violations` text, in bytes (1 KiB): with JSON's escaping at most doubling it in
/// the record, it stays inside the room [`MAX_RECORD_BYTES`] leaves above a maximal event.
pub const MAX_PLAN_VIOLATIONS_BYTES: usize = 1024;
/// Most bytes of events the producer packs into one stream record (a Kinesis record may hold
/// 1 MiB); an event larger than that travels alone.
///
/// Why pack at all: every Kinesis record costs the same fixed work wherever it goes (a sequence
/// number, a partition-key hash, an entry in `GetRecords`, an item in a Lambda event), and
/// provisioned shards also cap records at 1,000/s. A 50-event request as one record instead of 50
/// cuts the stream's per-record work fiftyfold. Why not the whole 1 MiB: a failed record is
/// retried whole, and the KPL's own aggregation default (50 KiB) shows the size where the
/// per-record overhead is already negligible.
pub const PACK_MAX_BYTES: usize = 64 * 1024;
