//! The producer's configuration, read once from the environment at start-up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use schemas::limits::DEFAULT_MAX_EVENT_AGE_SECS;

use service_kit::KitError;
use service_kit::env::{Env, FromEnv};

use crate::country::{CountryLookup, GEOIP_COUNTRY_DB};
use crate::intake::Intake;
use crate::sites::Sites;

/// Everything the producer reads from the environment. Names match the README table and the
/// Terraform Lambda environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `STREAM_NAME`: the Kinesis stream to put events on.
    pub stream_name: String,
    /// `BIND_ADDR`: local server listen address (default `127.0.0.1:3000`). Unused on Lambda.
    pub bind_addr: SocketAddr,
    /// `METRICS_ADDR`: local Prometheus endpoint (default `127.0.0.1:9101`). Unused on Lambda.
    pub metrics_addr: SocketAddr,
    /// The sites allowed to write (keys, origins, limits), read at start-up from `SITES_JSON`
    /// (the file's text; what Terraform sets on Lambda) or else the file at `SITES_CONFIG`
    /// (path; the local stack's `config/sites.json`). One of them is required. CORS allows
    /// exactly the sites' origins. `DEFAULT_SITE_KEY` (optional): the site of a request that
    /// names no key, for single-site deployments; the local stack does not set it.
    pub sites: Arc<Sites>,
    /// `PUBLISH_BUDGET_MS`: how long one request may spend retrying `PutRecords`, in milliseconds (default 2000).
    pub publish_budget: Duration,
    /// `LINGER_MS`: local server only: how long concurrent requests are coalesced, in milliseconds
    /// (default 50). Records per `PutRecords` call grow with it (events/s × linger, at most 500):
    /// at 5,000 events/s, 5 ms made 57-record calls (18.6 per 1,000 events) and 50 ms makes a few
    /// hundred, for at most 50 ms more per request. The Kinesis Producer Library waits 100 ms.
    pub linger: Duration,
    /// `TRUSTED_PROXY_HOPS`: how many reverse proxies in front of the local server append to
    /// `X-Forwarded-For` (default 0: the header is ignored and the peer address is the client).
    pub trusted_proxy_hops: usize,
    /// `REQUEST_TIMEOUT_MS`: local server: a request (including a slow body upload) older than
    /// this gets 408, in milliseconds (default 10000).
    pub request_timeout: Duration,
    /// The event rules of this deployment, among them `MAX_EVENT_AGE_DAYS`: how old, in whole
    /// days before the receive time, a clock-corrected `occurred_at` may be (default 31, at
    /// least 1). Older events are rejected one by one, naming `occurred_at`. And
    /// `GEOIP_COUNTRY_DB` (optional): the path of an MMDB country database, read once here, to
    /// record each event's country (`country`) from the client address before it is
    /// anonymised. Off when unset or when the file does not exist (`main` logs which); a file
    /// that exists but is not such a database is a start-up error.
    pub intake: Arc<Intake>,
}

impl FromEnv for Config {
    fn from_settings<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, KitError> {
        Ok(Config {
            stream_name: env.required("STREAM_NAME")?,
            bind_addr: env.parse_or("BIND_ADDR", SocketAddr::from(([127, 0, 0, 1], 3000)))?,
            metrics_addr: env.parse_or("METRICS_ADDR", SocketAddr::from(([127, 0, 0, 1], 9101)))?,
            sites: Arc::new(load_sites(env)?),
            publish_budget: env.millis_or("PUBLISH_BUDGET_MS", 2000)?,
            linger: env.millis_or("LINGER_MS", 50)?,
            trusted_proxy_hops: env.parse_or("TRUSTED_PROXY_HOPS", 0)?,
            request_timeout: env.millis_or("REQUEST_TIMEOUT_MS", 10_000)?,
            intake: Arc::new(load_intake(env)?),
        })
    }
}

/// The event rules from the environment; a bad value is a start-up error.
fn load_intake<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Intake, KitError> {
    const NAME: &str = "MAX_EVENT_AGE_DAYS";
    let default_days = DEFAULT_MAX_EVENT_AGE_SECS / 86_400;
    let days: i64 = env.parse_or(NAME, default_days)?;
    // 100 years keeps the arithmetic far from chrono's range; one day keeps yesterday's offline
    // queue deliverable.
    if !(1..=36_500).contains(&days) {
        return Err(env.invalid(NAME, "must be a whole number of days from 1 to 36500"));
    }
    let countries = CountryLookup::from_setting(env.get(GEOIP_COUNTRY_DB).as_deref())
        .map_err(|e| env.invalid(GEOIP_COUNTRY_DB, e.to_string()))?;
    Ok(Intake { max_event_age: TimeDelta::days(days), countries: Arc::new(countries), ..Intake::default() })
}

/// A bad sites file is a start-up error: better than a producer that answers 401 to everyone.
fn load_sites<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Sites, KitError> {
    let default_key = env.get("DEFAULT_SITE_KEY").filter(|k| !k.is_empty());
    let (name, text) = match (env.get("SITES_JSON").filter(|t| !t.trim().is_empty()), env.get("SITES_CONFIG")) {
        (Some(text), _) => ("SITES_JSON", text),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| env.invalid("SITES_CONFIG", format!("cannot read {path}: {e}")))?;
            ("SITES_CONFIG", text)
        }
        (None, None) => {
            return Err(env.invalid("SITES_CONFIG", "set SITES_CONFIG (a sites file) or SITES_JSON (its text)"));
        }
    };
    Sites::from_json(&text, default_key).map_err(|e| env.invalid(name, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_are_required_and_checked_at_start_up() {
        let config = |vars: &'static [(&'static str, &'static str)]| {
            Config::from_lookup(|k| {
                if k == "STREAM_NAME" {
                    return Some("s".into());
                }
                vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
            })
        };
        assert!(matches!(config(&[]), Err(KitError::InvalidEnv { .. })));
        assert!(matches!(config(&[("SITES_CONFIG", "/nonexistent/sites.json")]), Err(KitError::InvalidEnv { .. })));
        assert!(matches!(config(&[("SITES_JSON", "{\"sites\": 1}")]), Err(KitError::InvalidEnv { .. })));
        const REPO_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sites.json");
        let ok = config(&[("SITES_CONFIG", REPO_FILE)]).unwrap();
        assert!(ok.sites.get("pk_local_demo").is_some_and(|s| &*s.id == "local-demo"));
        assert!(ok.sites.any_allows_origin("http://localhost:5173"));
        assert_eq!(ok.intake.max_event_age, TimeDelta::days(31), "the default age limit");
    }

    #[test]
    fn max_event_age_is_read_in_days_and_bounded() {
        const REPO_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sites.json");
        let config = |days: &'static str| {
            Config::from_lookup(|k| match k {
                "STREAM_NAME" => Some("s".into()),
                "SITES_CONFIG" => Some(REPO_FILE.into()),
                "MAX_EVENT_AGE_DAYS" => Some(days.into()),
                _ => None,
            })
        };
        assert_eq!(config("7").unwrap().intake.max_event_age, TimeDelta::days(7));
        for bad in ["0", "-1", "36501", "1.5", "a week"] {
            assert!(matches!(config(bad), Err(KitError::InvalidEnv { .. })), "{bad}");
        }
    }
}
