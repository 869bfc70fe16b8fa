//! The one backoff policy of every custom retry loop, and the one reading of AWS error codes.

use std::time::Duration;

use tokio::time::Instant;

/// Exponential backoff with full jitter: the ceiling doubles per attempt from `base` up to
/// `cap`, and each wait is uniform below it, so clients that failed together spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Ceiling of the first wait.
    pub base: Duration,
    /// Largest ceiling, whatever the attempt.
    pub cap: Duration,
}

impl RetryPolicy {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        RetryPolicy { base, cap }
    }

    /// The ceiling of the wait before retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base.saturating_mul(1 << attempt.min(16)).min(self.cap)
    }

    /// A jittered wait before retry number `attempt` (0-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.ceiling(attempt).mul_f64(fastrand::f64())
    }

    /// The wait before retry `attempt`, or `None` when sleeping it would reach `deadline`: the
    /// caller then gives up with what it has, instead of overrunning its budget.
    pub fn backoff_within(&self, attempt: u32, deadline: Instant) -> Option<Duration> {
        let wait = self.backoff(attempt);
        (Instant::now() + wait < deadline).then_some(wait)
    }
}

/// What an AWS error code says about trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The service asked us to slow down: retry after a backoff.
    Throttled,
    /// Anything else that may pass: server errors, timeouts, connection errors (no code).
    Transient,
    /// The request itself is wrong or not allowed: retrying repeats the failure.
    Permanent,
}

/// Classifies an AWS error code (a whole call's, or one record's in a batch call). Unknown and
/// missing codes are transient: every write we retry is idempotent downstream.
pub fn classify_aws_code(code: Option<&str>) -> ErrorClass {
    match code {
        Some(
            "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "KMSThrottlingException"
            | "SlowDown",
        ) => ErrorClass::Throttled,
        Some(
            "ResourceNotFoundException"
            | "ValidationException"
            | "InvalidArgumentException"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "KMSAccessDeniedException"
            | "KMSDisabledException"
            | "KMSInvalidStateException"
            | "KMSNotFoundException"
            | "KMSOptInRequired",
        ) => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap_and_waits_stay_below() {
        let p = RetryPolicy::new(Duration::from_millis(25), Duration::from_secs(1));
        let ceilings: Vec<u128> = (0..8).map(|a| p.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [25, 50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(1));
        for a in 0..20 {
            assert!(p.backoff(a) <= p.ceiling(a));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_is_offered_past_the_deadline() {
        let p = RetryPolicy::new(Duration::from_secs(10), Duration::from_secs(10));
        assert_eq!(p.backoff_within(0, Instant::now()), None);
        let far = Instant::now() + Duration::from_secs(60);
        assert!(p.backoff_within(3, far).is_some());
    }

    #[test]
    fn codes_are_classified_once_for_every_service() {
        let cases = [
            (Some("ProvisionedThroughputExceededException"), ErrorClass::Throttled),
            (Some("ThrottlingException"), ErrorClass::Throttled),
            (Some("ValidationException"), ErrorClass::Permanent),
            (Some("UnrecognizedClientException"), ErrorClass::Permanent),
            (Some("InternalFailure"), ErrorClass::Transient),
            (None, ErrorClass::Transient),
        ];
        for (code, class) in cases {
            assert_eq!(classify_aws_code(code), class, "{code:?}");
        }
    }
}
