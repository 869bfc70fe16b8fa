//! Maintenance of the Parquet lake, run beside the pipeline rather than inside it: compaction of
//! closed hours, retention (deleting what has outlived its store's retention, the local stand-in
//! for S3 lifecycle and DynamoDB TTL), and erasure of visitors from the lake and the events table
//! (`forget`).
//!
//! Each tool is a binary under `src/bin/` with a `clap` command line, and on AWS a scheduled
//! Lambda where no AWS service does its job (retention's is done by S3 lifecycle and DynamoDB TTL). The crate depends on the event contract (`schemas`) and the shared plumbing
//! (`service-kit`), never on the consumer's batch handler.

pub mod compact;
mod error;
pub mod forget;
pub mod items;
pub mod retention;

pub use error::ToolError;
