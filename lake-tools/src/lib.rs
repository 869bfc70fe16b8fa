//! Maintenance of the Parquet lake, run beside the pipeline rather than inside it: compaction of
//! closed hours today; replaying failed batches and forgetting visitors will join it.
//!
//! Each tool is a binary under `src/bin/` with a `clap` command line, and on AWS a scheduled
//! Lambda. The crate depends on the event contract (`schemas`) and the shared plumbing
//! (`service-kit`), never on the consumer's batch handler.

pub mod compact;
mod error;

pub use error::ToolError;
