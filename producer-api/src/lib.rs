//! HTTP ingestion of analytics events: validate, enrich, and put them on the Kinesis stream.
//!
//! The same [`http::router`] serves API Gateway events on Lambda and plain HTTP locally; only
//! the [`http::Publisher`] differs (direct per request vs. coalesced across requests).

pub mod config;
pub mod country;
pub mod error;
pub mod http;
pub mod ingest;
pub mod intake;
pub mod kinesis;
pub mod publish;
pub mod server;
pub mod sites;
pub mod telemetry;
pub mod tracking_plan;

pub use config::Config;
pub use error::IngestError;
