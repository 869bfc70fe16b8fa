//! What the request path checks events against beyond the contract's fixed rules, set once at start-up.

use std::sync::Arc;

use chrono::TimeDelta;
use schemas::limits::DEFAULT_MAX_EVENT_AGE_SECS;

use crate::country::CountryLookup;
use crate::tracking_plan::TrackingPlans;

/// The deployment's own event rules, built from [`crate::Config`] and shared by every request.
#[derive(Debug, Clone)]
pub struct Intake {
    /// The oldest accepted `occurred_at`, once corrected for the client's clock, as an age before
    /// the receive time (`MAX_EVENT_AGE_DAYS`).
    pub max_event_age: TimeDelta,
    /// The tracking plans, compiled once per process (see [`TrackingPlans::embedded`]).
    pub plans: &'static TrackingPlans,
    /// The client address's country, looked up once per request before the address is
    /// anonymised (`GEOIP_COUNTRY_DB`; off by default).
    pub countries: Arc<CountryLookup>,
}

impl Default for Intake {
    /// The contract's defaults ([`DEFAULT_MAX_EVENT_AGE_SECS`]), the embedded plans, and no
    /// country lookup.
    ///
    /// # Panics
    /// When an embedded plan does not compile. `main` compiles them first and exits with the
    /// error instead, and `make plan-check` and the unit tests refuse such a plan before it
    /// ships, so this is reached only by a build that skipped both.
    fn default() -> Self {
        let plans = TrackingPlans::embedded().expect("the embedded tracking plans compile (run make plan-check)");
        Intake {
            max_event_age: TimeDelta::seconds(DEFAULT_MAX_EVENT_AGE_SECS),
            plans,
            countries: Arc::new(CountryLookup::Unset),
        }
    }
}
