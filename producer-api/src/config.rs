//! The producer's configuration, read once from the environment at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::KitError;
use service_kit::env::{Env, FromEnv};

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
    /// `CORS_ALLOWED_ORIGINS`: comma-separated origins allowed to post from browsers (default none).
    pub cors_allowed_origins: Vec<String>,
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
}

impl FromEnv for Config {
    fn from_settings<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, KitError> {
        let origins = env.get("CORS_ALLOWED_ORIGINS").unwrap_or_default();
        // tower-http panics on `*` in an origin list; a clear start-up error beats a crash on
        // every Lambda cold start, and allowing every origin should be a decision, not a default.
        if origins.split(',').any(|o| o.trim() == "*") {
            return Err(env.invalid("CORS_ALLOWED_ORIGINS", "`*` is not supported; list the origins allowed to post"));
        }
        Ok(Config {
            stream_name: env.required("STREAM_NAME")?,
            bind_addr: env.parse_or("BIND_ADDR", SocketAddr::from(([127, 0, 0, 1], 3000)))?,
            metrics_addr: env.parse_or("METRICS_ADDR", SocketAddr::from(([127, 0, 0, 1], 9101)))?,
            cors_allowed_origins: origins
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            publish_budget: env.millis_or("PUBLISH_BUDGET_MS", 2000)?,
            linger: env.millis_or("LINGER_MS", 50)?,
            trusted_proxy_hops: env.parse_or("TRUSTED_PROXY_HOPS", 0)?,
            request_timeout: env.millis_or("REQUEST_TIMEOUT_MS", 10_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_origin_is_a_config_error_not_a_panic() {
        let config = |origins: &'static str| {
            Config::from_lookup(|k| match k {
                "STREAM_NAME" => Some("s".into()),
                "CORS_ALLOWED_ORIGINS" => Some(origins.into()),
                _ => None,
            })
        };
        assert!(matches!(config("https://a.example, *"), Err(KitError::InvalidEnv { .. })));
        let ok = config(" https://a.example ,https://b.example,").unwrap();
        assert_eq!(ok.cors_allowed_origins, ["https://a.example", "https://b.example"]);
    }
}
