//! What the request path checks events against beyond the contract's fixed rules, set once at start-up.

use chrono::TimeDelta;
use schemas::limits::DEFAULT_MAX_EVENT_AGE_SECS;

/// The deployment's own event rules, built from [`crate::Config`] and shared by every request.
#[derive(Debug, Clone)]
pub struct Intake {
    /// The oldest accepted `occurred_at`, once corrected for the client's clock, as an age before
    /// the receive time (`MAX_EVENT_AGE_DAYS`).
    pub max_event_age: TimeDelta,
}

impl Default for Intake {
    /// The contract's defaults: [`DEFAULT_MAX_EVENT_AGE_SECS`].
    fn default() -> Self {
        Intake { max_event_age: TimeDelta::seconds(DEFAULT_MAX_EVENT_AGE_SECS) }
    }
}
