//! Sites: who may write events (a public key per site), from which browser origins, and how fast.
//!
//! Sites are configuration (`config/sites.json` locally, `SITES_JSON` on Lambda), read once at
//! start-up. Admission is pure and in memory, so the local server and every Lambda event shape
//! go through the same [`Sites::admit`]. Limits are per producer instance: two instances (or
//! two warm Lambda environments) each give a site its full rate; the global guard is API
//! Gateway's throttling and the WAF rate-based rule (terraform/).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use schemas::limits::MAX_BATCH_EVENTS;
use serde::Deserialize;

use crate::error::IngestError;

/// The request header that carries a site's write key (a body envelope's `site_key` also does,
/// for `navigator.sendBeacon`, which cannot set headers).
pub const SITE_KEY_HEADER: &str = "x-site-key";

/// Idle per-IP buckets are swept once per this many admissions: `retain_recent` walks the whole
/// map, so sweeping on every request would make each request cost O(buckets).
const SWEEP_EVERY: u64 = 1024;

/// The file's shape: `{"sites": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SitesFile {
    sites: Vec<SiteConfig>,
}

/// One site as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The id stored with every event of the site (lake `site` column, aggregates, items).
    pub id: String,
    /// The public write key, `pk_…`: it identifies, it does not authenticate (it is in the page).
    pub key: String,
    /// Browser origins allowed to post with this key: `scheme://host` or `scheme://host:port`,
    /// where the port may be `*` (any port, or none).
    pub allowed_origins: Vec<String>,
    /// Sustained rate for the whole site on one producer instance, in events per second.
    pub events_per_second: u32,
    /// Events the site may send at once above the sustained rate; at least one full batch.
    pub burst: u32,
    /// Sustained rate for one client address (IPv6: one /64) within the site, in events per second.
    pub per_ip_events_per_second: u32,
    /// Burst for one client address within the site, in events; at least one full batch.
    pub per_ip_burst: u32,
    /// How long the site's DynamoDB items live, in days (default: the consumer's
    /// `DYNAMODB_TTL_DAYS`). The consumer reads it (`stream_consumer::site_ttl`); the producer
    /// only accepts it, so one sites file serves both.
    #[serde(default)]
    pub dynamodb_ttl_days: Option<u32>,
}

/// A browser origin pattern: exact, or with any port.
#[derive(Debug, Clone)]
struct OriginPattern {
    /// `scheme://host`, lower case.
    base: String,
    /// `None`: the origin must be exactly `base`; `Some(None)`: any port or none; `Some(Some(p))`: port `p`.
    port: Option<Option<u16>>,
}

impl OriginPattern {
    fn parse(pattern: &str) -> Result<Self, String> {
        let lower = pattern.trim().to_ascii_lowercase();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return Err(format!("origin `{pattern}` is not scheme://host[:port]"));
        };
        if !matches!(scheme, "http" | "https")
            || rest.is_empty()
            || rest.contains('/')
            || rest.contains('*') && !rest.ends_with(":*")
        {
            return Err(format!("origin `{pattern}` is not http(s)://host[:port|:*]"));
        }
        match split_port(rest) {
            (host, Some("*")) => Ok(OriginPattern { base: format!("{scheme}://{host}"), port: Some(None) }),
            (host, Some(p)) => {
                let port = p.parse().map_err(|_| format!("origin `{pattern}` has a bad port"))?;
                Ok(OriginPattern { base: format!("{scheme}://{host}"), port: Some(Some(port)) })
            }
            (_, None) => Ok(OriginPattern { base: lower, port: None }),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else { return false };
        let (host, port) = split_port(rest);
        let base_matches = |b: &str| {
            b.len() == scheme.len() + 3 + host.len()
                && b[..scheme.len()].eq_ignore_ascii_case(scheme)
                && b[scheme.len() + 3..].eq_ignore_ascii_case(host)
        };
        match (self.port, port) {
            (None, _) => self.base.eq_ignore_ascii_case(origin),
            (Some(None), None) => base_matches(&self.base),
            (Some(None), Some(p)) => p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() && base_matches(&self.base),
            (Some(Some(want)), Some(p)) => p.parse::<u16>() == Ok(want) && base_matches(&self.base),
            (Some(Some(_)), None) => false,
        }
    }
}

/// `host[:port]` → (host, port); an IPv6 literal's colons are inside its brackets.
fn split_port(rest: &str) -> (&str, Option<&str>) {
    match rest.rfind(':') {
        Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    }
}

/// A configured site with its buckets.
pub struct Site {
    /// The id stamped into the site's events.
    pub id: Arc<str>,
    origins: Vec<OriginPattern>,
    bucket: DefaultDirectRateLimiter,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    admissions: AtomicU64,
}

impl Site {
    fn new(config: &SiteConfig) -> Result<Self, String> {
        let at_least_a_batch = |what: &str, n: u32| {
            if (n as usize) < MAX_BATCH_EVENTS {
                Err(format!(
                    "site `{}`: {what} must be at least {MAX_BATCH_EVENTS} (one full batch), not {n}",
                    config.id
                ))
            } else {
                Ok(())
            }
        };
        at_least_a_batch("burst", config.burst)?;
        at_least_a_batch("per_ip_burst", config.per_ip_burst)?;
        let quota = |rate: u32, burst: u32| -> Result<Quota, String> {
            let rate = NonZeroU32::new(rate).ok_or_else(|| format!("site `{}`: a rate must be above 0", config.id))?;
            Ok(Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate)))
        };
        if config.id.is_empty() || config.id.len() > 64 {
            return Err("a site id must be 1 to 64 characters".into());
        }
        Ok(Site {
            id: Arc::from(config.id.as_str()),
            origins: config.allowed_origins.iter().map(|o| OriginPattern::parse(o)).collect::<Result<_, _>>()?,
            bucket: RateLimiter::direct(quota(config.events_per_second, config.burst)?),
            per_ip: RateLimiter::dashmap(quota(config.per_ip_events_per_second, config.per_ip_burst)?),
            admissions: AtomicU64::new(0),
        })
    }

    /// Whether a browser on `origin` may post with this site's key.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.origins.iter().any(|p| p.matches(origin))
    }

    /// Takes `events` tokens from the client's bucket, then from the site's; on refusal, how
    /// long until they would be there. The client's bucket goes first so that one client over
    /// its own limit does not spend the site's budget.
    fn take(&self, client: Option<IpAddr>, events: NonZeroU32) -> Result<(), Duration> {
        if self.admissions.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Buckets that have refilled are indistinguishable from new ones: dropping them keeps
            // memory to the clients seen in the last `per_ip_burst / per_ip_events_per_second` s.
            self.per_ip.retain_recent();
            self.per_ip.shrink_to_fit();
        }
        // The limiter's own clock: building a quanta clock calibrates it (microseconds).
        let now = self.bucket.clock().now();
        if let Some(ip) = client {
            match self.per_ip.check_key_n(&bucket_key(ip), events) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => return Err(not_until.wait_time_from(now)),
                Err(_) => return Err(Duration::from_secs(1)),
            }
        }
        match self.bucket.check_n(events) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(now)),
            Err(_) => Err(Duration::from_secs(1)),
        }
    }

    /// How many per-IP buckets are held (for tests and metrics).
    pub fn ip_buckets(&self) -> usize {
        self.per_ip.len()
    }
}

/// One bucket per IPv4 address and per IPv6 /64: a single host usually owns a whole /64, so
/// per-address buckets would let it mint new budgets (and new map entries) at will.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// What the request says about who sends it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `X-Site-Key` header.
    pub header_key: Option<&'a str>,
    /// The body envelope's `site_key`.
    pub body_key: Option<&'a str>,
    /// The `Origin` header, when a browser sent one.
    pub origin: Option<&'a str>,
    /// The client's address (see `http::client_ip`).
    pub client_ip: Option<IpAddr>,
}

impl std::fmt::Debug for Sites {
    /// Site ids only: keys are public, but logs need no copy of them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_key.values().map(|s| &s.id)).finish()
    }
}

/// Every configured site, by key.
pub struct Sites {
    by_key: HashMap<String, Site>,
    /// `DEFAULT_SITE_KEY`: the site of a request that names none.
    default_key: Option<String>,
}

impl Sites {
    /// Reads the sites file's text (JSON, `{"sites": [...]}`).
    pub fn from_json(text: &str, default_key: Option<String>) -> Result<Self, IngestError> {
        let bad = |m: String| IngestError::SiteConfig(m);
        let file: SitesFile = serde_json::from_str(text).map_err(|e| bad(format!("sites config is not valid: {e}")))?;
        let mut by_key = HashMap::with_capacity(file.sites.len());
        let mut ids = std::collections::HashSet::new();
        for config in &file.sites {
            if !ids.insert(config.id.clone()) {
                return Err(bad(format!("site id `{}` appears twice", config.id)));
            }
            if by_key.insert(config.key.clone(), Site::new(config).map_err(bad)?).is_some() {
                return Err(bad(format!("site key of `{}` is used by another site", config.id)));
            }
        }
        if let Some(key) = &default_key
            && !by_key.contains_key(key)
        {
            return Err(bad("DEFAULT_SITE_KEY names no configured site".into()));
        }
        Ok(Sites { by_key, default_key })
    }

    /// Whether any site allows `origin` (what CORS answers; the per-key check is [`Self::admit`]).
    pub fn any_allows_origin(&self, origin: &str) -> bool {
        self.by_key.values().any(|s| s.allows_origin(origin))
    }

    /// Whether any site allows a browser origin at all (else the router needs no CORS layer).
    pub fn has_origins(&self) -> bool {
        self.by_key.values().any(|s| !s.origins.is_empty())
    }

    /// The site, by key.
    pub fn get(&self, key: &str) -> Option<&Site> {
        self.by_key.get(key)
    }

    /// Decides whether `events` events may be accepted: key (401), origin (403), limits (429).
    pub fn admit(&self, who: Credentials<'_>, events: usize) -> Result<&Site, IngestError> {
        // The header wins over the body's `site_key`: a client that can set headers chose it.
        let key = match who.header_key.or(who.body_key).or(self.default_key.as_deref()) {
            Some(k) => k,
            None => {
                return Err(IngestError::Unauthorized(
                    "missing site key: send the X-Site-Key header or \"site_key\" in the body".into(),
                ));
            }
        };
        let site = self.by_key.get(key).ok_or_else(|| IngestError::Unauthorized("unknown site key".into()))?;
        if let Some(origin) = who.origin
            && !site.allows_origin(origin)
        {
            return Err(IngestError::Forbidden(format!("origin {origin} is not allowed for this site key")));
        }
        let n = NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        site.take(who.client_ip, n).map_err(|wait| IngestError::RateLimited {
            message: format!("site {} is over its rate limit; retry later", site.id),
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        })?;
        Ok(site)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = r#"{"sites": [{"id": "local-demo", "key": "pk_local_demo",
        "allowed_origins": ["http://127.0.0.1:*", "http://localhost:*", "https://shop.example"],
        "events_per_second": 1000, "burst": 1000, "per_ip_events_per_second": 500, "per_ip_burst": 600}]}"#;

    fn who<'a>(key: Option<&'a str>, origin: Option<&'a str>, ip: &str) -> Credentials<'a> {
        Credentials { header_key: key, body_key: None, origin, client_ip: Some(ip.parse().unwrap()) }
    }

    fn status(r: Result<&Site, IngestError>) -> u16 {
        r.map(|_| 202).unwrap_or_else(|e| e.status().as_u16())
    }

    #[test]
    fn origin_patterns() {
        let any = OriginPattern::parse("http://127.0.0.1:*").unwrap();
        assert!(any.matches("http://127.0.0.1:8080"));
        assert!(any.matches("http://127.0.0.1"));
        assert!(!any.matches("http://127.0.0.1.evil.example:80"));
        assert!(!any.matches("https://127.0.0.1:8080"));
        assert!(!any.matches("http://127.0.0.1:"));
        let exact = OriginPattern::parse("https://Shop.example").unwrap();
        assert!(exact.matches("https://shop.example"));
        assert!(!exact.matches("https://shop.example:444"));
        let v6 = OriginPattern::parse("http://[::1]:*").unwrap();
        assert!(v6.matches("http://[::1]:3000"));
        assert!(OriginPattern::parse("*").is_err());
        assert!(OriginPattern::parse("https://*.example").is_err());
        assert!(OriginPattern::parse("https://a.example/path").is_err());
    }

    #[test]
    fn key_then_origin_then_limits() {
        let sites = Sites::from_json(DEMO, None).unwrap();
        assert_eq!(status(sites.admit(who(None, None, "10.0.0.1"), 1)), 401);
        assert_eq!(status(sites.admit(who(Some("pk_nope"), None, "10.0.0.1"), 1)), 401);
        assert_eq!(status(sites.admit(who(Some("pk_local_demo"), Some("https://evil.example"), "10.0.0.1"), 1)), 403);
        let ok = sites.admit(who(Some("pk_local_demo"), Some("http://localhost:5173"), "10.0.0.1"), 1).unwrap();
        assert_eq!(&*ok.id, "local-demo");
        let body_only = Credentials { body_key: Some("pk_local_demo"), ..who(None, None, "10.0.0.2") };
        assert_eq!(status(sites.admit(body_only, 1)), 202);
        let both = Credentials { body_key: Some("pk_other"), ..who(Some("pk_local_demo"), None, "10.0.0.2") };
        assert_eq!(status(sites.admit(both, 1)), 202, "the header wins");
    }

    #[test]
    fn one_client_cannot_drain_the_site_and_the_site_has_a_ceiling() {
        let sites = Sites::from_json(DEMO, None).unwrap();
        let key = Some("pk_local_demo");
        // Client A: its own burst (600) passes, the next batch is refused with a wait.
        assert_eq!(status(sites.admit(who(key, None, "10.0.0.1"), 500)), 202);
        let err = sites.admit(who(key, None, "10.0.0.1"), 500).map(|_| ()).unwrap_err();
        assert!(matches!(err, IngestError::RateLimited { retry_after_secs: 1.., .. }), "{err:?}");
        // Client B still gets the rest of the site's burst (1000 - 500), then the site is full.
        assert_eq!(status(sites.admit(who(key, None, "10.0.0.2"), 500)), 202);
        assert_eq!(status(sites.admit(who(key, None, "10.0.0.3"), 10)), 429);
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        assert_eq!(
            bucket_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            bucket_key("2001:db8:1:2:bbbb::9".parse().unwrap())
        );
        assert_ne!(bucket_key("2001:db8:1:2::1".parse().unwrap()), bucket_key("2001:db8:1:3::1".parse().unwrap()));
    }

    #[test]
    fn idle_ip_buckets_are_evicted() {
        // At 1M events/s a bucket refills its 500 tokens in half a millisecond.
        let fast = DEMO.replace("\"per_ip_events_per_second\": 500", "\"per_ip_events_per_second\": 1000000");
        let sites =
            Sites::from_json(&fast.replace("\"events_per_second\": 1000,", "\"events_per_second\": 1000000,"), None)
                .unwrap();
        let site = sites.get("pk_local_demo").unwrap();
        for i in 0..u32::try_from(SWEEP_EVERY - 1).unwrap() {
            site.take(Some(std::net::Ipv4Addr::from(i).into()), NonZeroU32::MIN).unwrap();
        }
        assert_eq!(site.ip_buckets(), usize::try_from(SWEEP_EVERY - 1).unwrap());
        std::thread::sleep(Duration::from_millis(5));
        site.take(None, NonZeroU32::MIN).unwrap();
        assert_eq!(site.ip_buckets(), 0);
    }

    #[test]
    fn bad_configs_fail_at_start_up() {
        let with = |patch: &str| DEMO.replace("\"burst\": 1000", patch);
        assert!(Sites::from_json(&with("\"burst\": 10"), None).is_err(), "burst below one batch");
        assert!(Sites::from_json(DEMO, Some("pk_missing".into())).is_err());
        assert!(Sites::from_json(&DEMO.replace("http://localhost:*", "*"), None).is_err());
        assert!(Sites::from_json("{\"sites\": [], \"extra\": 1}", None).is_err());
        let keyless = Sites::from_json(DEMO, Some("pk_local_demo".into())).unwrap();
        assert_eq!(status(keyless.admit(who(None, None, "10.0.0.9"), 1)), 202);
    }
}
