//! The event contract: what an analytics event is, how it travels on the stream, and how it is laid out in every store.
//!
//! Everything here is pure data and pure functions so that the producer, the consumer, the
//! verifier and the tests agree by construction rather than by convention.

mod canonical;
mod de;
pub mod dynamo;
pub mod envelope;
pub mod event;
pub mod lake;
#[cfg(feature = "parquet")]
pub mod lake_file;
pub mod limits;
pub mod properties;
mod rules;
pub mod visitors;

pub use envelope::{
    DecodeError, ENVELOPE_VERSION, EVENT_SEPARATOR, Envelope, decode_record, encode_record, record_events,
};
pub use event::{
    EnrichedEvent, ServerFacts, StoredFacts, ValidEvent, ValidationError, anonymise_ip, validate_event, validate_json,
};
pub use properties::Properties;

/// The JSON Schema published for clients; kept next to the Rust rules and checked against them.
pub const EVENT_JSON_SCHEMA: &str = include_str!("../event.schema.json");

/// The PostgreSQL migrations directory, relative to this crate (used by `sqlx::migrate!`).
pub const MIGRATIONS_DIR: &str = "migrations";
