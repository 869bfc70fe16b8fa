//! The only I/O of the consumer: one small type per store, one method per batch.

pub mod dynamo;
pub mod postgres;
pub mod s3;
pub mod sqs;

use std::time::Duration;

use service_kit::retry::RetryPolicy;

/// The waits of the consumer's retry loops (DynamoDB's unprocessed items, the local runner's
/// GetRecords and batch retries): 50 ms doubling up to 2 s, full jitter.
pub const SINK_RETRY: RetryPolicy = RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(2));
