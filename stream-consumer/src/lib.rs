//! Kinesis batch handling: decode, deduplicate, aggregate, then write Parquet to S3, items to
//! DynamoDB and counts to PostgreSQL, exactly once.
//!
//! Pure modules (`decode`, `enrich`, `aggregate`, `plan`, `lake`) take data and return data;
//! only `sinks` does I/O. `handler` sequences one batch, `lambda` is the Lambda boundary and
//! `runner` emulates the event source mapping locally.

pub mod aggregate;
pub mod config;
pub mod decode;
pub mod enrich;
pub mod error;
pub mod handler;
pub mod in_memory;
pub mod lake;
pub mod lambda;
pub mod ledger;
pub mod memory;
pub mod plan;
pub mod runner;
pub mod sinks;
pub mod telemetry;
pub mod testing;

pub use config::Config;
pub use error::ConsumerError;
pub use handler::{BatchReport, HandlerSettings, Pipeline};

/// Builds the handler settings from the config.
pub fn handler_settings(config: &Config) -> HandlerSettings {
    HandlerSettings {
        dynamodb_ttl_days: config.dynamodb_ttl_days,
        dynamodb_concurrency: config.dynamodb_concurrency,
        sink_budget: config.sink_budget,
        dedup_window_hours: config.dedup_window_hours,
    }
}
