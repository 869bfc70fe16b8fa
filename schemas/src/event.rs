//! The incoming analytics event: field rules, validation with a field-level reason, and server enrichment.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::limits::*;

/// Which field of an event failed validation, and why. `field` is a dotted path
/// (`properties.cart.items`), or `""` for the event as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationError {
    pub field: String,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "event: {}", self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for ValidationError {}

/// The top-level fields a client may send. Anything else is rejected, which also stops clients
/// from forging the server facts (`received_at`, `client_ip`).
pub const CLIENT_FIELDS: [&str; 10] = [
    "event_id",
    "event_type",
    "occurred_at",
    "anonymous_id",
    "user_id",
    "session_id",
    "url",
    "referrer",
    "user_agent",
    "properties",
];

/// A client event that passed validation; server facts are not added yet.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    pub event_id: Option<Uuid>,
    pub event_type: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub url: Option<String>,
    pub referrer: Option<String>,
    pub user_agent: Option<String>,
    pub properties: Map<String, Value>,
}

/// Facts only the server knows, added to every accepted event.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    /// When the API received the request (UTC).
    pub received_at: DateTime<Utc>,
    /// The caller's address, as seen by the API. Anonymised before it is stored anywhere.
    pub client_ip: Option<IpAddr>,
    /// The request's `User-Agent` header, used when the event carries none.
    pub user_agent: Option<String>,
}

/// An accepted event with the server facts: what travels on the stream and lands in every store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichedEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The client address with its host part zeroed (see [`anonymise_ip`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
}

impl EnrichedEvent {
    /// Re-applies the client rules to an event read back from the stream. The consumer does this
    /// because the stream can be written by anything holding the IAM permission, not only our API.
    pub fn check(&self) -> Result<(), ValidationError> {
        check_event_type(&self.event_type)?;
        for (name, value, max, min) in [
            ("anonymous_id", &self.anonymous_id, MAX_ID_LEN, 1),
            ("user_id", &self.user_id, MAX_ID_LEN, 1),
            ("session_id", &self.session_id, MAX_ID_LEN, 1),
            ("url", &self.url, MAX_URL_LEN, 1),
            ("referrer", &self.referrer, MAX_URL_LEN, 0),
            ("user_agent", &self.user_agent, MAX_USER_AGENT_LEN, 0),
        ] {
            if let Some(s) = value {
                check_text(name, s, min, max)?;
            }
        }
        check_properties(&self.properties)
    }
}

impl ValidEvent {
    /// Adds the server facts: assigns an `event_id` when the client sent none, defaults
    /// `occurred_at` to the receive time, takes the header user agent when the event has none,
    /// and anonymises the address. The full address is dropped here and never leaves this call.
    pub fn enrich(self, facts: &ServerFacts) -> EnrichedEvent {
        let user_agent = self.user_agent.or_else(|| facts.user_agent.as_deref().map(header_user_agent));
        EnrichedEvent {
            event_id: self.event_id.unwrap_or_else(Uuid::new_v4),
            event_type: self.event_type,
            occurred_at: self.occurred_at.unwrap_or(facts.received_at),
            received_at: facts.received_at,
            anonymous_id: self.anonymous_id,
            user_id: self.user_id,
            session_id: self.session_id,
            url: self.url,
            referrer: self.referrer,
            user_agent,
            client_ip: facts.client_ip.map(|ip| anonymise_ip(ip).to_string()),
            properties: self.properties,
        }
    }
}

/// The `User-Agent` header made to pass the same rules as a client-sent `user_agent`: HTTP allows
/// a TAB in header values, and [`EnrichedEvent::check`] (run again by the consumer) does not, so
/// an unsanitised header would turn an acknowledged event into a poison record downstream.
fn header_user_agent(ua: &str) -> String {
    truncate_chars(ua, MAX_USER_AGENT_LEN).chars().map(|c| if is_forbidden_control(c) { ' ' } else { c }).collect()
}

/// Zeroes the host part of an address: the last octet of IPv4, the last 80 bits of IPv6
/// (keeping the /48 routing prefix). IPv4-mapped IPv6 addresses are treated as IPv4, and so are
/// 6to4 addresses (`2002:AABB:CCDD::/48`), whose /48 is the whole public IPv4 address.
pub fn anonymise_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return anonymise_ip(IpAddr::V4(v4));
            }
            let mut octets = v6.octets();
            // 6to4: bytes 2..6 are the IPv4 address; keep its /24 like any IPv4 address.
            let keep = if octets[..2] == [0x20, 0x02] { 5 } else { 6 };
            octets[keep..].fill(0);
            IpAddr::from(octets)
        }
    }
}

/// Validates one client event (a JSON value) at time `now`; returns the first field that fails.
pub fn validate_event(value: &Value, now: DateTime<Utc>) -> Result<ValidEvent, ValidationError> {
    let Value::Object(obj) = value else {
        return Err(ValidationError::new("", format!("must be a JSON object, got {}", kind(value))));
    };
    if let Some(unknown) = obj.keys().find(|k| !CLIENT_FIELDS.contains(&k.as_str())) {
        return Err(ValidationError::new(unknown.as_str(), "unknown field"));
    }
    let size = json_size(value);
    if size > MAX_EVENT_BYTES {
        return Err(ValidationError::new("", format!("is {size} bytes, the limit is {MAX_EVENT_BYTES}")));
    }

    let event_id = match present(obj, "event_id") {
        None => None,
        Some(v) => Some(parse_uuid(v)?),
    };
    let event_type = match present(obj, "event_type") {
        None => return Err(ValidationError::new("event_type", "is required")),
        Some(v) => {
            let s = expect_str("event_type", v)?;
            check_event_type(s)?;
            s.to_owned()
        }
    };
    let occurred_at = match present(obj, "occurred_at") {
        None => None,
        Some(v) => {
            let at = parse_timestamp("occurred_at", v)?;
            if (at - now).num_seconds() > MAX_FUTURE_SKEW_SECS {
                return Err(ValidationError::new(
                    "occurred_at",
                    format!("is more than {} hours in the future", MAX_FUTURE_SKEW_SECS / 3600),
                ));
            }
            Some(at)
        }
    };
    let text = |name: &str, min: usize, max: usize| -> Result<Option<String>, ValidationError> {
        match present(obj, name) {
            None => Ok(None),
            Some(v) => {
                let s = expect_str(name, v)?;
                check_text(name, s, min, max)?;
                Ok(Some(s.to_owned()))
            }
        }
    };
    let anonymous_id = text("anonymous_id", 1, MAX_ID_LEN)?;
    let user_id = text("user_id", 1, MAX_ID_LEN)?;
    let session_id = text("session_id", 1, MAX_ID_LEN)?;
    let url = text("url", 1, MAX_URL_LEN)?;
    let referrer = text("referrer", 0, MAX_URL_LEN)?;
    let user_agent = text("user_agent", 0, MAX_USER_AGENT_LEN)?;
    let properties = match present(obj, "properties") {
        None => Map::new(),
        Some(Value::Object(p)) => {
            check_properties(p)?;
            p.clone()
        }
        Some(other) => {
            return Err(ValidationError::new("properties", format!("must be an object, got {}", kind(other))));
        }
    };
    Ok(ValidEvent {
        event_id,
        event_type,
        occurred_at,
        anonymous_id,
        user_id,
        session_id,
        url,
        referrer,
        user_agent,
        properties,
    })
}

/// `^[a-z][a-z0-9_]{0,63}$`, checked by hand: the rule is simple and the regex crate is a large
/// dependency for one pattern. Because event types are stored as text and never used in paths,
/// this is about cardinality and readability, not injection.
pub fn check_event_type(s: &str) -> Result<(), ValidationError> {
    let bytes = s.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_EVENT_TYPE_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new("event_type", format!("must match ^[a-z][a-z0-9_]{{0,{}}}$", MAX_EVENT_TYPE_LEN - 1)))
    }
}

fn check_text(field: &str, s: &str, min: usize, max: usize) -> Result<(), ValidationError> {
    let len = s.chars().count();
    if len < min {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if len > max {
        return Err(ValidationError::new(field, format!("is {len} characters, the limit is {max}")));
    }
    if s.chars().any(is_forbidden_control) {
        return Err(ValidationError::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// C0 controls and DEL. They have no place in identifiers or URLs and break log lines and CSV
/// exports downstream.
fn is_forbidden_control(c: char) -> bool {
    c <= '\u{1f}' || c == '\u{7f}'
}

/// Checks depth, keys per object, key and string lengths, array lengths and total size.
pub fn check_properties(props: &Map<String, Value>) -> Result<(), ValidationError> {
    check_object("properties", props, 1)?;
    let size = json_size_map(props);
    if size > MAX_PROPERTIES_BYTES {
        return Err(ValidationError::new(
            "properties",
            format!("is {size} bytes, the limit is {MAX_PROPERTIES_BYTES}"),
        ));
    }
    Ok(())
}

/// Most items in any array inside `properties`.
pub const MAX_PROPERTIES_ARRAY_ITEMS: usize = 100;

fn check_object(path: &str, obj: &Map<String, Value>, depth: usize) -> Result<(), ValidationError> {
    if obj.len() > MAX_PROPERTIES_KEYS {
        return Err(ValidationError::new(path, format!("has {} keys, the limit is {MAX_PROPERTIES_KEYS}", obj.len())));
    }
    for (key, value) in obj {
        if key.chars().count() > MAX_PROPERTY_KEY_LEN {
            return Err(ValidationError::new(path, format!("has a key longer than {MAX_PROPERTY_KEY_LEN} characters")));
        }
        check_value(&format!("{path}.{key}"), value, depth)?;
    }
    Ok(())
}

/// `depth` is the depth of the container holding `value`.
fn check_value(path: &str, value: &Value, depth: usize) -> Result<(), ValidationError> {
    match value {
        Value::Object(inner) => {
            nested(path, depth)?;
            check_object(path, inner, depth + 1)
        }
        Value::Array(items) => {
            nested(path, depth)?;
            if items.len() > MAX_PROPERTIES_ARRAY_ITEMS {
                return Err(ValidationError::new(
                    path,
                    format!("has {} items, the limit is {MAX_PROPERTIES_ARRAY_ITEMS}", items.len()),
                ));
            }
            items.iter().enumerate().try_for_each(|(i, item)| check_value(&format!("{path}.{i}"), item, depth + 1))
        }
        Value::String(s) if s.chars().count() > MAX_PROPERTY_STRING_LEN => {
            Err(ValidationError::new(path, format!("is longer than {MAX_PROPERTY_STRING_LEN} characters")))
        }
        _ => Ok(()),
    }
}

fn nested(path: &str, depth: usize) -> Result<(), ValidationError> {
    if depth >= MAX_PROPERTIES_DEPTH {
        Err(ValidationError::new(path, format!("nests deeper than {MAX_PROPERTIES_DEPTH} levels")))
    } else {
        Ok(())
    }
}

/// A field that is absent or `null` counts as not sent.
fn present<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn expect_str<'a>(field: &str, v: &'a Value) -> Result<&'a str, ValidationError> {
    v.as_str().ok_or_else(|| ValidationError::new(field, format!("must be a string, got {}", kind(v))))
}

fn parse_uuid(v: &Value) -> Result<Uuid, ValidationError> {
    let s = expect_str("event_id", v)?;
    // Only the canonical hyphenated form: the same ID must not arrive in two spellings and
    // escape deduplication.
    if s.len() != 36 {
        return Err(ValidationError::new("event_id", "must be a UUID in 8-4-4-4-12 hyphenated form"));
    }
    Uuid::parse_str(s).map_err(|_| ValidationError::new("event_id", "must be a UUID in 8-4-4-4-12 hyphenated form"))
}

/// RFC 3339 with an upper-case `T` and an explicit offset, exactly what the JSON Schema pattern allows.
fn parse_timestamp(field: &str, v: &Value) -> Result<DateTime<Utc>, ValidationError> {
    let s = expect_str(field, v)?;
    let bad = || ValidationError::new(field, "must be an RFC 3339 timestamp such as 2024-05-01T12:00:00Z");
    if !is_timestamp_shape(s.as_bytes()) {
        return Err(bad());
    }
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|_| bad())
}

/// The shape of the published pattern, `\d{4}-\d\d-\d\dT\d\d:\d\d:[0-5]\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)`,
/// checked by hand. chrono alone also takes `z`, ` UTC`, a space before the offset, a Unicode
/// minus and leap seconds, which the pattern (and so the API description) does not; the value
/// ranges (month 01-12, hour 00-23, …) are left to chrono.
fn is_timestamp_shape(b: &[u8]) -> bool {
    let digits = |range: std::ops::Range<usize>| range.into_iter().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let date_time = digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19)
        && b[17] <= b'5';
    if !date_time {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        let fraction = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&fraction) {
            return false;
        }
        i += 1 + fraction;
    }
    match &b[i..] {
        [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Serialized size without allocating the serialized text.
fn json_size(v: &Value) -> usize {
    let mut counter = ByteCounter(0);
    // Writing a Value into an io::Write that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, v);
    counter.0
}

fn json_size_map(m: &Map<String, Value>) -> usize {
    let mut counter = ByteCounter(0);
    let _ = serde_json::to_writer(&mut counter, m);
    counter.0
}

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn anonymise_ipv4_zeroes_last_octet() {
        assert_eq!(anonymise_ip("203.0.113.77".parse().unwrap()).to_string(), "203.0.113.0");
    }

    #[test]
    fn anonymise_ipv6_keeps_only_48_bits() {
        let ip = anonymise_ip("2001:db8:abcd:1234:5678:9abc:def0:1234".parse().unwrap());
        assert_eq!(ip.to_string(), "2001:db8:abcd::");
    }

    #[test]
    fn anonymise_6to4_keeps_only_the_embedded_ipv4_slash_24() {
        // 2002:cb00:7107::/48 would be all of 203.0.113.7.
        let ip = anonymise_ip("2002:cb00:7107:1:2:3:4:5".parse().unwrap());
        assert_eq!(ip.to_string(), "2002:cb00:7100::");
    }

    #[test]
    fn anonymise_ipv4_mapped_ipv6_as_ipv4() {
        assert_eq!(anonymise_ip("::ffff:198.51.100.9".parse().unwrap()).to_string(), "198.51.100.0");
    }

    #[test]
    fn enrich_assigns_id_defaults_time_and_takes_header_agent() {
        let v = validate_event(&json!({"event_type": "page_view"}), now()).unwrap();
        let facts = ServerFacts {
            received_at: now(),
            client_ip: Some("192.0.2.200".parse().unwrap()),
            user_agent: Some("curl/8".into()),
        };
        let e = v.enrich(&facts);
        assert_eq!(e.occurred_at, now());
        assert_eq!(e.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(e.client_ip.as_deref(), Some("192.0.2.0"));
        assert_eq!(e.event_id.get_version_num(), 4);
    }

    /// Invariant: what enrich produces passes the consumer's check, whatever the header held.
    #[test]
    fn header_user_agent_with_controls_still_passes_check() {
        let v = validate_event(&json!({"event_type": "a"}), now()).unwrap();
        let ua = format!("evil\tagent\u{7f}{}", "x".repeat(2000));
        let e = v.enrich(&ServerFacts { received_at: now(), client_ip: None, user_agent: Some(ua) });
        assert!(e.check().is_ok(), "{:?}", e.check());
        let stored = e.user_agent.unwrap();
        assert!(stored.starts_with("evil agent "), "{stored:?}");
        assert_eq!(stored.chars().count(), MAX_USER_AGENT_LEN);
    }

    /// Invariant: exactly the timestamps the published pattern allows (chrono is more lenient).
    #[test]
    fn occurred_at_is_held_to_the_published_pattern() {
        for ok in ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.123+05:30", "2024-05-01T12:00:00.123456789-00:00"] {
            assert!(validate_event(&json!({"event_type": "a", "occurred_at": ok}), now()).is_ok(), "{ok}");
        }
        for bad in [
            "2024-05-01T12:00:00z",
            "2024-05-01t12:00:00Z",
            "2024-05-01T12:00:00 UTC",
            "2024-05-01T12:00:00 +05:00",
            "2024-05-01T12:00:00\u{2212}05:00",
            "2024-05-01T12:00:60Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00.1234567890Z",
            "2024-05-01T12:00:00+05",
            "2024-05-01T12:00:00",
            "2024-05-01 12:00:00Z",
            "2024-13-01T12:00:00Z",
            "2024-02-30T12:00:00Z",
        ] {
            let err = validate_event(&json!({"event_type": "a", "occurred_at": bad}), now()).unwrap_err();
            assert_eq!(err.field, "occurred_at", "{bad}");
        }
    }

    #[test]
    fn occurred_at_far_in_future_is_rejected() {
        let err =
            validate_event(&json!({"event_type": "a", "occurred_at": "2024-05-03T12:00:00Z"}), now()).unwrap_err();
        assert_eq!(err.field, "occurred_at");
    }

    #[test]
    fn properties_size_limit_names_properties() {
        let big: Map<String, Value> = (0..20).map(|i| (format!("k{i}"), json!("x".repeat(1000)))).collect();
        let err = validate_event(&json!({"event_type": "a", "properties": big}), now()).unwrap_err();
        assert_eq!(err.field, "properties");
        assert!(err.reason.contains("bytes"), "{err}");
    }

    #[test]
    fn enriched_event_check_catches_forged_stream_records() {
        let v = validate_event(&json!({"event_type": "ok"}), now()).unwrap();
        let mut e = v.enrich(&ServerFacts { received_at: now(), client_ip: None, user_agent: None });
        assert!(e.check().is_ok());
        e.event_type = "../../etc".into();
        assert_eq!(e.check().unwrap_err().field, "event_type");
    }
}
