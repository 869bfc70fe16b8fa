//! Kinesis batch handling: decode, deduplicate, aggregate, then write Parquet to S3, items to
//! DynamoDB and counts to PostgreSQL, exactly once.
//!
//! Pure modules (`decode`, `enrich`, `aggregate`, `plan`, `lake`) take data and return data;
//! only `sinks` does I/O. `handler` sequences one batch, `lambda` is the Lambda boundary,
//! `runner` emulates the event source mapping locally and `replay` re-runs what it gave up on.

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
pub mod replay;
pub mod runner;
pub mod sinks;
pub mod site_ttl;
pub mod telemetry;
pub mod testing;

pub use config::Config;
pub use error::ConsumerError;
pub use handler::{BatchReport, HandlerSettings, Pipeline};

/// The pipeline over the configured stores, as the consumer and `replay` build it. Who retries
/// each store's calls is decided here, once (ARCHITECTURE.md, "Who retries"): S3 puts and heads
/// have no loop of ours around them; DynamoDB's unprocessed items have.
pub fn aws_pipeline(
    config: &Config,
    sdk: &service_kit::aws::SdkConfig,
    db: service_kit::postgres::Database,
) -> Pipeline<sinks::s3::S3Lake, sinks::dynamo::DynamoItems, sinks::postgres::PgLedger> {
    use service_kit::aws::{self, Retries};
    Pipeline::new(
        sinks::s3::S3Lake::new(aws::s3(sdk, Retries::Sdk), config.lake_bucket.clone()),
        sinks::dynamo::DynamoItems::new(aws::dynamodb(sdk, Retries::Ours), config.dynamodb_table.clone()),
        sinks::postgres::PgLedger::new(db),
        handler_settings(config),
    )
}

/// Builds the handler settings from the config.
pub fn handler_settings(config: &Config) -> HandlerSettings {
    HandlerSettings {
        dynamodb_ttl: config.dynamodb_ttl.clone(),
        dynamodb_concurrency: config.dynamodb_concurrency,
        sink_budget: config.sink_budget,
        dedup_window_hours: config.dedup_window_hours,
    }
}
