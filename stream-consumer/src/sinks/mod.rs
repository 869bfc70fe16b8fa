//! The only I/O of the consumer: one small type per store, one method per batch.

pub mod dynamo;
pub mod postgres;
pub mod s3;

use std::time::Duration;

/// First retry delay for sink retries; doubles per attempt up to [`BACKOFF_CAP`], full jitter.
pub const BACKOFF_BASE: Duration = Duration::from_millis(50);
pub const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Full-jitter exponential backoff for `attempt` (0-based).
pub fn backoff(attempt: u32) -> Duration {
    BACKOFF_BASE.saturating_mul(1 << attempt.min(10)).min(BACKOFF_CAP).mul_f64(fastrand::f64())
}
