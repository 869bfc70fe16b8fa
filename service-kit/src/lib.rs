//! Process plumbing shared by the producer, the consumer and the lake tools, written once.
//!
//! Every binary starts the same way: typed config from the environment ([`env`]), JSON logs and
//! a shutdown signal ([`telemetry`]), metrics exported to Prometheus locally or as CloudWatch EMF
//! on Lambda ([`telemetry::install_metrics`]), AWS clients whose SDK retry mode is chosen per
//! call site ([`aws`]), and — for the tools that need it — the PostgreSQL pool ([`postgres`]).
//! Every custom retry loop waits through one [`retry::RetryPolicy`].

pub mod aws;
#[cfg(feature = "dynamodb")]
pub mod dynamo;
pub mod env;
mod error;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod retry;
#[cfg(feature = "s3")]
pub mod s3;
pub mod telemetry;

pub use error::KitError;
