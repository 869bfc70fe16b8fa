//! The incoming analytics event: field rules, validation with a field-level reason, and server enrichment.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::de::visit_as_kind;
use crate::limits::*;
use crate::properties::{Properties, PropertiesSeed};
use crate::rules::{
    self, ANONYMOUS_ID, REFERRER, SESSION_ID, TEXT_RULES, TextRule, URL, USER_AGENT, USER_ID, parse_utc_fast,
};

// Defined with the rules and the serde helpers, below both this module and `properties`; kept
// reachable here, where callers have always found them.
pub use crate::de::BorrowedStr;
pub use crate::rules::ValidationError;

/// The top-level fields a client may send. Anything else is rejected, which also stops clients
/// from forging the server facts (`received_at`, `client_ip`).
pub const CLIENT_FIELDS: [&str; 11] = [
    "event_id",
    "event_type",
    "occurred_at",
    "anonymous_id",
    "user_id",
    "session_id",
    "url",
    "referrer",
    "user_agent",
    // The client's clock when it sent this event; the request envelope's `sent_at` stands in
    // for every event that has none (see `Clock`).
    "sent_at",
    "properties",
];

/// A client event that passed validation; server facts are not added yet. Text borrows from
/// the request body wherever the JSON had no escapes, so the request path copies it only once,
/// into the stream record.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent<'a> {
    pub event_id: Option<Uuid>,
    pub event_type: Cow<'a, str>,
    /// Corrected for the client's clock when a `sent_at` applied (see [`Clock`]).
    pub occurred_at: Option<DateTime<Utc>>,
    /// The client's own `occurred_at`, when it was corrected.
    pub original_occurred_at: Option<DateTime<Utc>>,
    /// The `sent_at` that applied: the event's own, else the envelope's.
    pub sent_at: Option<DateTime<Utc>>,
    pub anonymous_id: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub session_id: Option<Cow<'a, str>>,
    pub url: Option<Cow<'a, str>>,
    pub referrer: Option<Cow<'a, str>>,
    pub user_agent: Option<Cow<'a, str>>,
    pub properties: Properties<'static>,
}

/// The time facts one request's events are checked against. Client clocks are wrong by minutes
/// to years; what a client can tell us is when, by its own clock, it sent the request
/// (`sent_at`). As Segment does, the producer moves each `occurred_at` by
/// `received_at − sent_at`, which cancels the client's offset (network latency, well under a
/// second, is the error left), and then holds the corrected time to the window
/// `[received_at − max_age, received_at + MAX_FUTURE_SKEW_SECS]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// When the API received the request.
    pub received_at: DateTime<Utc>,
    /// The request envelope's `sent_at`, for the events that carry none of their own.
    pub sent_at: Option<DateTime<Utc>>,
    /// The oldest accepted corrected `occurred_at`, as an age before `received_at`.
    pub max_age: TimeDelta,
}

impl Clock {
    /// A request received at `received_at` with no envelope `sent_at`, under the default
    /// [`DEFAULT_MAX_EVENT_AGE_SECS`].
    pub fn at(received_at: DateTime<Utc>) -> Self {
        Clock { received_at, sent_at: None, max_age: TimeDelta::seconds(DEFAULT_MAX_EVENT_AGE_SECS) }
    }

    /// `occurred_at` moved by `received_at − sent_at`; `None` if that leaves chrono's range
    /// (only for absurd timestamps, which the window rejects anyway).
    pub fn correct(&self, occurred_at: DateTime<Utc>, sent_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        occurred_at.checked_add_signed(self.received_at - sent_at)
    }
}

/// Whether `s` is an event type the contract allows (`^[a-z][a-z0-9_]{0,63}$`): the tracking
/// plans' file names are held to it.
pub fn is_event_type(s: &str) -> bool {
    rules::event_type(s).is_ok()
}

/// Reads a timestamp as the contract allows it in `occurred_at` and `sent_at` (RFC 3339 with an
/// upper-case `T` and an explicit offset); the reason is for the field the caller names.
pub fn parse_timestamp(field: &str, text: &str) -> Result<DateTime<Utc>, ValidationError> {
    rules::timestamp(text).map_err(|b| b.at(field))
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

impl ServerFacts {
    /// The facts as they are stored, worked out once per request rather than once per event:
    /// the anonymised address and the sanitised header user agent.
    pub fn stored(&self) -> StoredFacts {
        StoredFacts {
            received_at: self.received_at,
            client_ip: self.client_ip.map(|ip| anonymise_ip(ip).to_string()),
            header_user_agent: self.user_agent.as_deref().map(header_user_agent),
            site: None,
            country: None,
        }
    }
}

/// [`ServerFacts`] in their stored form; the full address is not in here.
#[derive(Debug, Clone)]
pub struct StoredFacts {
    pub received_at: DateTime<Utc>,
    /// The anonymised client address (see [`anonymise_ip`]).
    pub client_ip: Option<String>,
    /// The `User-Agent` header made to pass the user-agent rules.
    pub header_user_agent: Option<String>,
    /// The id of the site whose key admitted the request (`None` only for callers that admit
    /// no site, e.g. tests and benchmarks of the bare path).
    pub site: Option<String>,
    /// The client address's country (ISO 3166-1 alpha-2), looked up by the producer in the full
    /// address before [`ServerFacts::stored`] anonymised it; `None` when the lookup is off or
    /// found nothing.
    pub country: Option<String>,
}

/// An accepted event with the server facts: what travels on the stream and lands in every store.
/// Read back from a record, its text borrows the record's bytes wherever the JSON had no
/// escapes (a batch of 10,000 events would otherwise make ~90,000 small copies and frees);
/// built by [`ValidEvent::record`], it borrows the request body until it is encoded; built by
/// [`ValidEvent::enrich`], it owns its text (`EnrichedEvent<'static>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichedEvent<'a> {
    pub event_id: Uuid,
    #[serde(borrow)]
    pub event_type: Cow<'a, str>,
    #[serde(deserialize_with = "rfc3339", serialize_with = "write_rfc3339")]
    pub occurred_at: DateTime<Utc>,
    #[serde(deserialize_with = "rfc3339", serialize_with = "write_rfc3339")]
    pub received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed")]
    pub anonymous_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed")]
    pub user_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed")]
    pub session_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed")]
    pub url: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed")]
    pub referrer: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed")]
    pub user_agent: Option<Cow<'a, str>>,
    /// The client address with its host part zeroed (see [`anonymise_ip`]).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed")]
    pub client_ip: Option<Cow<'a, str>>,
    /// The site the event was written to (its key's site id, set by the producer). Absent from
    /// records written before sites existed: they read as `None` (null in the stores).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed")]
    pub site: Option<Cow<'a, str>>,
    /// The client address's country (ISO 3166-1 alpha-2, set by the producer from the full
    /// address before anonymising it). Absent when the producer's lookup is off or knows the
    /// address not, and from records written before it existed: they read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed")]
    pub country: Option<Cow<'a, str>>,
    /// The client's own `occurred_at` when the producer corrected it for the client's clock
    /// (`occurred_at` is then the corrected time); absent when nothing was corrected, and in
    /// records written before clock correction.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "rfc3339_opt",
        serialize_with = "write_rfc3339_opt"
    )]
    pub original_occurred_at: Option<DateTime<Utc>>,
    /// The client's clock when it sent the event (its own `sent_at` or the request's), if known.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "rfc3339_opt",
        serialize_with = "write_rfc3339_opt"
    )]
    pub sent_at: Option<DateTime<Utc>>,
    /// The tracking plan's violations of a `warn`-mode plan, as a JSON array of
    /// `{pointer, rule, message}` (set by the producer; absent when clean, when the type has no
    /// plan, and in records written before plans). Its quotes are escaped in the record, so such
    /// records are read on the general path, not the canonical one; they are the exception.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "borrowed")]
    pub plan_violations: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Properties::is_empty")]
    pub properties: Properties<'a>,
}

/// An optional string field, borrowed from the input when it has no escapes (serde's own
/// `Option<Cow<str>>` always copies).
fn borrowed<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<BorrowedStr<'de>>::deserialize(d)?.map(|s| s.0))
}

impl EnrichedEvent<'_> {
    /// Re-applies the client rules to an event read back from the stream. The consumer does this
    /// because the stream can be written by anything holding the IAM permission, not only our API.
    pub fn check(&self) -> Result<(), ValidationError> {
        self.check_fields()?;
        self.properties.check()
    }

    /// The rules of every field but `properties`, in the order [`EnrichedEvent::check`] applies
    /// them (so the first broken rule is the same).
    fn check_fields(&self) -> Result<(), ValidationError> {
        rules::event_id_value(self.event_id).map_err(|b| b.at("event_id"))?;
        rules::event_type(&self.event_type).map_err(|b| b.at("event_type"))?;
        let values = [&self.anonymous_id, &self.user_id, &self.session_id, &self.url, &self.referrer, &self.user_agent];
        for (rule, value) in TEXT_RULES.into_iter().zip(values) {
            if let Some(s) = value {
                rule.check(s).map_err(|b| b.at(rule.field))?;
            }
        }
        Ok(())
    }
}

impl EnrichedEvent<'_> {
    /// The same event owning all its text, e.g. to keep it past the record it was read from.
    pub fn into_owned(self) -> EnrichedEvent<'static> {
        let own = |s: Option<Cow<'_, str>>| s.map(|s| Cow::Owned(s.into_owned()));
        EnrichedEvent {
            event_id: self.event_id,
            event_type: Cow::Owned(self.event_type.into_owned()),
            occurred_at: self.occurred_at,
            received_at: self.received_at,
            anonymous_id: own(self.anonymous_id),
            user_id: own(self.user_id),
            session_id: own(self.session_id),
            url: own(self.url),
            referrer: own(self.referrer),
            user_agent: own(self.user_agent),
            client_ip: own(self.client_ip),
            site: own(self.site),
            country: own(self.country),
            original_occurred_at: self.original_occurred_at,
            sent_at: self.sent_at,
            plan_violations: own(self.plan_violations),
            properties: self.properties.into_owned(),
        }
    }
}

impl<'a> ValidEvent<'a> {
    /// Adds the server facts, borrowing: `event_id` is the client's or a new random one (drawn
    /// only then: each draw is a `getrandom` system call, and most clients send their own),
    /// `occurred_at` defaults to the receive time, the header user agent stands in when the event
    /// has none, and the address is the anonymised one (the full address never reaches this type).
    pub fn record<'s>(&'s self, facts: &'s StoredFacts) -> EnrichedEvent<'s> {
        let text = |s: &'s Option<Cow<'a, str>>| s.as_deref().map(Cow::Borrowed);
        EnrichedEvent {
            event_id: self.event_id.unwrap_or_else(Uuid::new_v4),
            event_type: Cow::Borrowed(&self.event_type),
            occurred_at: self.occurred_at.unwrap_or(facts.received_at),
            received_at: facts.received_at,
            anonymous_id: text(&self.anonymous_id),
            user_id: text(&self.user_id),
            session_id: text(&self.session_id),
            url: text(&self.url),
            referrer: text(&self.referrer),
            user_agent: self.user_agent.as_deref().or(facts.header_user_agent.as_deref()).map(Cow::Borrowed),
            client_ip: facts.client_ip.as_deref().map(Cow::Borrowed),
            site: facts.site.as_deref().map(Cow::Borrowed),
            country: facts.country.as_deref().map(Cow::Borrowed),
            original_occurred_at: self.original_occurred_at,
            sent_at: self.sent_at,
            plan_violations: None,
            properties: self.properties.borrowed(),
        }
    }

    /// [`ValidEvent::record`] as an owned event, with a new random ID when the client sent none.
    pub fn enrich(self, facts: &ServerFacts) -> EnrichedEvent<'static> {
        let stored = facts.stored();
        self.record(&stored).into_owned()
    }
}

/// The `User-Agent` header made to pass the same rules as a client-sent `user_agent`: HTTP allows
/// a TAB in header values, and [`EnrichedEvent::check`] (run again by the consumer) does not, so
/// an unsanitised header would turn an acknowledged event into a poison record downstream.
fn header_user_agent(ua: &str) -> String {
    let control = |c: char| u8::try_from(c).is_ok_and(rules::is_control_byte);
    truncate_chars(ua, MAX_USER_AGENT_LEN).chars().map(|c| if control(c) { ' ' } else { c }).collect()
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

/// Validates one client event (a JSON value) received at `now`, with no envelope `sent_at` and
/// the default age limit; returns the first field that fails.
pub fn validate_event(value: &Value, now: DateTime<Utc>) -> Result<ValidEvent<'_>, ValidationError> {
    validate_from(value, &Clock::at(now))
}

/// [`validate_json_at`] with no envelope `sent_at` and the default age limit.
pub fn validate_json(text: &str, now: DateTime<Utc>) -> Result<ValidEvent<'_>, ValidationError> {
    validate_json_at(text, &Clock::at(now))
}

/// Validates one client event given as JSON text, borrowing its strings: the producer's path.
pub fn validate_json_at<'t>(text: &'t str, clock: &Clock) -> Result<ValidEvent<'t>, ValidationError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let event = validate_from(&mut de, clock)?;
    de.end().map_err(|e| ValidationError::new("", format!("is not valid JSON: {e}")))?;
    Ok(event)
}

/// The one implementation of the client rules, over any JSON source (text or a parsed value):
/// a single pass collects the fields, then they are checked in a fixed order.
pub fn validate_from<'de, D: Deserializer<'de>>(de: D, clock: &Clock) -> Result<ValidEvent<'de>, ValidationError> {
    let mut f = read_fields(de)?;
    if let Some(unknown) = f.unknown.take() {
        return Err(ValidationError::new(unknown, "unknown field"));
    }
    if let Some(key) = f.duplicate.take() {
        return Err(ValidationError::new("", rules::duplicate_key(&key)));
    }
    rules::event_size(f.compact_size()).map_err(|b| b.at(""))?;
    // A struct's fields are evaluated in the order written: this is the order the rules are
    // checked in, and so decides which broken rule is reported.
    let event_id = f.event_id()?;
    let event_type = f.event_type()?;
    let times = f.times(clock)?;
    Ok(ValidEvent {
        event_id,
        event_type,
        occurred_at: times.occurred_at,
        original_occurred_at: times.original_occurred_at,
        sent_at: times.sent_at,
        anonymous_id: f.text(ANONYMOUS_ID)?,
        user_id: f.text(USER_ID)?,
        session_id: f.text(SESSION_ID)?,
        url: f.text(URL)?,
        referrer: f.text(REFERRER)?,
        user_agent: f.text(USER_AGENT)?,
        properties: f.properties()?,
    })
}

/// The single pass over the JSON source that collects the client fields.
fn read_fields<'de, D: Deserializer<'de>>(de: D) -> Result<Fields<'de>, ValidationError> {
    let mut properties_error = None;
    match de.deserialize_any(EventVisitor { properties_error: &mut properties_error }) {
        Ok(Shape::Object(f)) => Ok(f),
        Ok(Shape::NotObject(kind)) => Err(ValidationError::new("", format!("must be a JSON object, got {kind}"))),
        Err(e) => Err(properties_error.unwrap_or_else(|| ValidationError::new("", format!("is not valid JSON: {e}")))),
    }
}

/// A top-level field as read: only strings are ever valid, so anything else keeps just its kind.
#[derive(Debug, Default)]
enum Slot<'de> {
    #[default]
    Absent,
    Null,
    Str(Cow<'de, str>),
    Other(&'static str),
}

impl<'de> Slot<'de> {
    fn text(self, field: &str) -> Result<Cow<'de, str>, ValidationError> {
        match self {
            Slot::Str(s) => Ok(s),
            other => Err(ValidationError::new(field, format!("must be a string, got {}", other.kind()))),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Slot::Absent | Slot::Null => "null",
            Slot::Str(_) => "a string",
            Slot::Other(kind) => kind,
        }
    }
}

#[derive(Debug, Default)]
enum PropertiesSlot {
    #[default]
    Absent,
    Null,
    Checked(Properties<'static>),
    Invalid(ValidationError),
}

/// An event's time fields after the clock correction.
struct Times {
    occurred_at: Option<DateTime<Utc>>,
    original_occurred_at: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
}

/// The client fields whose values are strings: all but `properties`, which is last.
const TEXT_FIELDS: &[&str] = CLIENT_FIELDS.split_last().expect("client fields").1;

/// The client fields of one event: one slot per [`TEXT_FIELDS`] entry, and `properties`.
#[derive(Debug, Default)]
struct Fields<'de> {
    slots: [Slot<'de>; CLIENT_FIELDS.len() - 1],
    properties: PropertiesSlot,
    /// The first field that is not a client field.
    unknown: Option<String>,
    /// The first client field sent twice.
    duplicate: Option<String>,
}

impl<'de> Fields<'de> {
    /// The field's value; absent and `null` are both `None` (the contract treats them alike).
    fn take(&mut self, name: &str) -> Option<Slot<'de>> {
        let i = TEXT_FIELDS.iter().position(|f| *f == name)?;
        match std::mem::take(&mut self.slots[i]) {
            Slot::Absent | Slot::Null => None,
            v => Some(v),
        }
    }

    fn event_id(&mut self) -> Result<Option<Uuid>, ValidationError> {
        let Some(v) = self.take("event_id") else { return Ok(None) };
        rules::event_id(&v.text("event_id")?).map(Some).map_err(|b| b.at("event_id"))
    }

    fn event_type(&mut self) -> Result<Cow<'de, str>, ValidationError> {
        let Some(v) = self.take("event_type") else { return Err(ValidationError::new("event_type", "is required")) };
        let s = v.text("event_type")?;
        rules::event_type(&s).map_err(|b| b.at("event_type"))?;
        Ok(s)
    }

    /// An optional timestamp field.
    fn timestamp(&mut self, field: &str) -> Result<Option<DateTime<Utc>>, ValidationError> {
        let Some(v) = self.take(field) else { return Ok(None) };
        parse_timestamp(field, &v.text(field)?).map(Some)
    }

    /// `occurred_at` corrected by the `sent_at` that applies, and held to the clock's window.
    fn times(&mut self, clock: &Clock) -> Result<Times, ValidationError> {
        let occurred_at = self.timestamp("occurred_at")?;
        let sent_at = self.timestamp("sent_at")?.or(clock.sent_at);
        let Some(client) = occurred_at else {
            return Ok(Times { occurred_at: None, original_occurred_at: None, sent_at });
        };
        let corrected = match sent_at {
            Some(sent) => clock.correct(client, sent),
            None => Some(client),
        };
        let outside = |b: rules::Broken| b.at("occurred_at");
        let at = corrected.ok_or_else(|| {
            outside(if client > clock.received_at {
                rules::Broken::TooFarAhead
            } else {
                rules::Broken::TooOld { max_age_secs: clock.max_age.num_seconds() }
            })
        })?;
        rules::within_window(at, clock.received_at, clock.max_age).map_err(outside)?;
        let original_occurred_at = sent_at.map(|_| client);
        Ok(Times { occurred_at: Some(at), original_occurred_at, sent_at })
    }

    /// An optional text field, held to its rule.
    fn text(&mut self, rule: TextRule) -> Result<Option<Cow<'de, str>>, ValidationError> {
        let Some(v) = self.take(rule.field) else { return Ok(None) };
        let s = v.text(rule.field)?;
        rule.check(&s).map_err(|b| b.at(rule.field))?;
        Ok(Some(s))
    }

    fn properties(&mut self) -> Result<Properties<'static>, ValidationError> {
        match std::mem::take(&mut self.properties) {
            PropertiesSlot::Absent | PropertiesSlot::Null => Ok(Properties::empty()),
            PropertiesSlot::Checked(p) => Ok(p),
            PropertiesSlot::Invalid(e) => Err(e),
        }
    }

    /// The event's size as compact JSON, as the size rule counts it (a field sent as `null`
    /// included). Values of the wrong kind count zero: such an event is rejected anyway.
    fn compact_size(&self) -> usize {
        let mut fields = 0usize;
        let mut size = 2;
        for (name, slot) in TEXT_FIELDS.iter().zip(&self.slots) {
            let value = match slot {
                Slot::Absent => continue,
                Slot::Null => 4,
                Slot::Str(s) => json_string_len(s),
                Slot::Other(_) => 0,
            };
            fields += 1;
            size += name.len() + 3 + value;
        }
        let properties = match &self.properties {
            PropertiesSlot::Absent => None,
            PropertiesSlot::Null => Some(4),
            PropertiesSlot::Checked(p) => Some(p.json().len()),
            PropertiesSlot::Invalid(_) => Some(0),
        };
        if let Some(value) = properties {
            fields += 1;
            size += "properties".len() + 3 + value;
        }
        size + fields.saturating_sub(1)
    }
}

/// Length of `s` as a JSON string literal, quotes and escapes included, without writing it.
fn json_string_len(s: &str) -> usize {
    let mut counter = ByteCounter(0);
    // Writing a string into an io::Write that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, s);
    counter.0
}

// Lives on the stack for one event; boxing the fields would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Shape<'de> {
    Object(Fields<'de>),
    NotObject(&'static str),
}

struct EventVisitor<'e> {
    properties_error: &'e mut Option<ValidationError>,
}

impl<'de> Visitor<'de> for EventVisitor<'_> {
    type Value = Shape<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape<'de>, A::Error> {
        let mut f = Fields::default();
        // A repeated key is refused (readers disagree on which value it has): one bit per client
        // field; an unknown field is refused anyway.
        let mut seen = 0u16;
        while let Some(BorrowedStr(key)) = map.next_key()? {
            if let Some(i) = CLIENT_FIELDS.iter().position(|c| *c == key) {
                if seen & (1 << i) != 0 && f.duplicate.is_none() {
                    f.duplicate = Some(key.to_string());
                }
                seen |= 1 << i;
            }
            if key == "properties" {
                f.properties = match map.next_value_seed(PropertiesSeed { error: self.properties_error })? {
                    Ok(Some(p)) => PropertiesSlot::Checked(p),
                    Ok(None) => PropertiesSlot::Null,
                    Err(e) => PropertiesSlot::Invalid(e),
                };
                continue;
            }
            match TEXT_FIELDS.iter().position(|c| *c == key) {
                Some(i) => f.slots[i] = map.next_value::<SlotValue<'de>>()?.0,
                None => {
                    if f.unknown.is_none() {
                        f.unknown = Some(key.into_owned());
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Shape::Object(f))
    }
    visit_as_kind!('de, Shape<'de>, Shape::NotObject);
    fn visit_unit<E>(self) -> Result<Shape<'de>, E> {
        Ok(Shape::NotObject("null"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape<'de>, E> {
        Ok(Shape::NotObject("a string"))
    }
}

/// One top-level field's value: a string (borrowed when it can be), null, or the kind of anything else.
struct SlotValue<'de>(Slot<'de>);

impl<'de> Deserialize<'de> for SlotValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Slot<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Slot<'de>, E> {
                Ok(Slot::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Slot<'de>, E> {
                Ok(Slot::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Slot<'de>, E> {
                Ok(Slot::Str(Cow::Owned(s)))
            }
            fn visit_unit<E>(self) -> Result<Slot<'de>, E> {
                Ok(Slot::Null)
            }
            fn visit_none<E>(self) -> Result<Slot<'de>, E> {
                Ok(Slot::Null)
            }
            visit_as_kind!('de, Slot<'de>, Slot::Other);
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Slot::Other("an object"))
            }
        }
        d.deserialize_any(V).map(SlotValue)
    }
}

/// A timestamp on the stream. Records carry the form this crate writes
/// (`2024-05-01T11:59:58.123Z`), read here digit by digit; chrono's general RFC 3339 parser,
/// several times slower, reads anything else exactly as the derived `Deserialize` would.
fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let BorrowedStr(text) = BorrowedStr::deserialize(d)?;
    if let Some(t) = parse_utc_fast(text.as_bytes()) {
        return Ok(t);
    }
    text.parse::<DateTime<chrono::FixedOffset>>().map(|t| t.with_timezone(&Utc)).map_err(serde::de::Error::custom)
}

/// An optional timestamp on the stream, read as [`rfc3339`] reads a required one.
fn rfc3339_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    #[derive(Deserialize)]
    struct Stamp(#[serde(deserialize_with = "rfc3339")] DateTime<Utc>);
    Ok(Option::<Stamp>::deserialize(d)?.map(|s| s.0))
}

/// A timestamp on the stream: the text chrono's `Serialize` writes, by the faster writer
/// [`rules::format_utc_fast`] where it can (every timestamp a live event has).
fn write_rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match crate::rules::format_utc_fast(t, &mut buf) {
        Some(text) => s.serialize_str(text),
        None => t.serialize(s),
    }
}

/// An optional timestamp on the stream, written as [`write_rfc3339`] writes a required one
/// (`None` is skipped by the field's `skip_serializing_if`).
fn write_rfc3339_opt<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    struct Stamp<'t>(&'t DateTime<Utc>);
    impl Serialize for Stamp<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            write_rfc3339(self.0, s)
        }
    }
    match t {
        Some(t) => s.serialize_some(&Stamp(t)),
        None => s.serialize_none(),
    }
}

fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
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
    use crate::rules::is_timestamp_shape;
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
        let raw = json!({"event_type": "page_view"});
        let v = validate_event(&raw, now()).unwrap();
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
        let raw = json!({"event_type": "a"});
        let v = validate_event(&raw, now()).unwrap();
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

    /// Invariant: the fast reader of stream timestamps agrees with chrono on every form.
    #[test]
    fn stream_timestamps_read_alike_fast_and_slow() {
        for text in [
            "2024-05-01T11:59:58Z",
            "2024-05-01T11:59:58.1Z",
            "2024-05-01T11:59:58.123Z",
            "2024-05-01T11:59:58.123456789Z",
            "2024-02-29T00:00:00.000Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            let slow = text.parse::<DateTime<chrono::FixedOffset>>().unwrap().with_timezone(&Utc);
            assert_eq!(parse_utc_fast(text.as_bytes()), Some(slow), "{text}");
        }
        for other in [
            "2024-05-01T11:59:58+02:00",
            "2023-02-29T00:00:00Z",
            "2024-05-01T11:59:60Z",
            "2024-05-01",
            "2024-05-01T11:59:58",
            "2024-05-01T11:59:58.Z",
            "2024-05-01T11:59:58.1234567890Z",
            "2024-05-01T11:59:58.12a4Z",
            "2024-05-01 11:59:58Z",
            "2024-05-01T11:5a:58Z",
            "2024-13-01T11:59:58Z",
            "2024-05-01T24:00:00Z",
            "+024-05-01T11:59:58Z",
        ] {
            assert_eq!(parse_utc_fast(other.as_bytes()), None, "{other}");
        }
        // Every one-character edit of a stream timestamp: the fast reader takes exactly what the
        // published shape with a `Z` and chrono take.
        let base = "2024-02-29T23:59:58.123Z";
        for at in 0..=base.len() {
            for c in ['0', '5', '6', '9', 'a', '-', ':', '.', 'T', 'Z', '+', ' '] {
                for edited in [
                    format!("{}{c}{}", &base[..at], &base[at..]),
                    format!("{}{c}{}", &base[..at], base.get(at + 1..).unwrap_or("")),
                ] {
                    let slow = (is_timestamp_shape(edited.as_bytes()) && edited.ends_with('Z'))
                        .then(|| edited.parse::<DateTime<chrono::FixedOffset>>().ok().map(|t| t.with_timezone(&Utc)))
                        .flatten();
                    assert_eq!(parse_utc_fast(edited.as_bytes()), slow, "{edited}");
                }
            }
        }
        let e: EnrichedEvent = serde_json::from_str(
            r#"{"event_id":"0b6f9e7c-3f0e-4d7e-9a55-6d1f3f9b2a10","event_type":"a","occurred_at":"2024-05-01T13:59:58+02:00","received_at":"2024-05-01T12:00:00.5Z"}"#,
        )
        .unwrap();
        assert_eq!(e.occurred_at, "2024-05-01T11:59:58Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(e.received_at, "2024-05-01T12:00:00.500Z".parse::<DateTime<Utc>>().unwrap());
    }

    #[test]
    fn occurred_at_far_in_future_is_rejected() {
        let err =
            validate_event(&json!({"event_type": "a", "occurred_at": "2024-05-03T12:00:00Z"}), now()).unwrap_err();
        assert_eq!(err.field, "occurred_at");
    }

    /// Invariant (#20): a top-level field sent twice is refused, however the second is spelled,
    /// and a key twice inside `properties` is refused naming its object.
    #[test]
    fn duplicate_keys_in_an_event_are_refused() {
        for (text, field, reason) in [
            (r#"{"event_type":"a","event_type":"b"}"#, "", r#"has a duplicate key "event_type""#),
            (r#"{"event_type":"a","event_\u0074ype":"a"}"#, "", r#"has a duplicate key "event_type""#),
            (r#"{"event_type":"a","properties":{},"properties":null}"#, "", r#"has a duplicate key "properties""#),
            (r#"{"event_type":"a","user_id":null,"user_id":"u"}"#, "", r#"has a duplicate key "user_id""#),
            (
                r#"{"event_type":"a","properties":{"p":[{"k":1,"\u006b":2}]}}"#,
                "properties.p.0",
                r#"has a duplicate key "k""#,
            ),
        ] {
            assert_eq!(validate_json(text, now()).unwrap_err(), ValidationError::new(field, reason), "{text}");
        }
    }

    /// Invariant (#20): the nil and max UUIDs are not event IDs, in any case, on the way in and
    /// when read back from the stream.
    #[test]
    fn nil_and_max_event_ids_are_refused() {
        for id in [
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "ffffffff-FFFF-ffff-FFFF-ffffffffffff",
        ] {
            let err = validate_event(&json!({"event_type": "a", "event_id": id}), now()).unwrap_err();
            assert_eq!(err.field, "event_id", "{id}");
            assert!(err.reason.contains("nil UUID"), "{err}");
        }
        for id in ["00000000-0000-0000-0000-000000000001", "ffffffff-ffff-ffff-ffff-fffffffffffe"] {
            assert!(validate_event(&json!({"event_type": "a", "event_id": id}), now()).is_ok(), "{id}");
        }
        let mut e = validate_event(&json!({"event_type": "a"}), now()).unwrap().enrich(&ServerFacts {
            received_at: now(),
            client_ip: None,
            user_agent: None,
        });
        e.event_id = Uuid::max();
        assert_eq!(e.check().unwrap_err().field, "event_id");
        assert_eq!(crate::decode_record(&crate::encode_record(&e)).unwrap_err().reason_code(), "invalid_event");
    }

    fn clock(sent_at: Option<&str>) -> Clock {
        Clock { sent_at: sent_at.map(|s| s.parse().unwrap()), ..Clock::at(now()) }
    }

    /// An event's (occurred_at, original_occurred_at, sent_at) after validation, as RFC 3339 text.
    type TimesText = (Option<String>, Option<String>, Option<String>);

    fn times(event: Value, clock: &Clock) -> Result<TimesText, ValidationError> {
        let text = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339());
        validate_from(&event, clock).map(|v| (text(v.occurred_at), text(v.original_occurred_at), text(v.sent_at)))
    }

    /// Invariant: `occurred_at` moves by `received_at − sent_at`, whichever way the client's clock
    /// is off; the client's value is kept, and an event's own `sent_at` wins over the envelope's.
    #[test]
    fn occurred_at_is_corrected_by_received_minus_sent() {
        // The client's clock is 2 h 30 min behind: it sent at 09:30 by its clock, which was 12:00.
        let behind = json!({"event_type": "a", "occurred_at": "2024-05-01T09:29:00Z"});
        assert_eq!(
            times(behind.clone(), &clock(Some("2024-05-01T09:30:00Z"))).unwrap(),
            (
                Some("2024-05-01T11:59:00+00:00".into()),
                Some("2024-05-01T09:29:00+00:00".into()),
                Some("2024-05-01T09:30:00+00:00".into())
            )
        );
        // A year ahead, offsets and fractions included: corrected to 5.5 s before receipt.
        let ahead = json!({"event_type": "a", "occurred_at": "2025-05-01T14:00:00.500+02:00", "sent_at": "2025-05-01T12:00:06Z"});
        let (occurred, original, _) = times(ahead, &clock(Some("2000-01-01T00:00:00Z"))).unwrap();
        assert_eq!(occurred.as_deref(), Some("2024-05-01T11:59:54.500+00:00"), "the event's sent_at wins");
        assert_eq!(original.as_deref(), Some("2025-05-01T12:00:00.500+00:00"));
        // Without occurred_at there is nothing to correct: it stays the receive time (None here).
        let bare = times(json!({"event_type": "a"}), &clock(Some("2024-05-01T09:30:00Z"))).unwrap();
        assert_eq!(bare, (None, None, Some("2024-05-01T09:30:00+00:00".into())));
    }

    /// Invariant: no `sent_at` anywhere → `occurred_at` is the client's, unchanged, and nothing
    /// is recorded as original.
    #[test]
    fn without_sent_at_occurred_at_is_unchanged() {
        let event = json!({"event_type": "a", "occurred_at": "2024-05-01T11:00:00.123Z"});
        assert_eq!(times(event, &clock(None)).unwrap(), (Some("2024-05-01T11:00:00.123+00:00".into()), None, None));
    }

    /// Invariant: the window is inclusive at exactly 31 days back and 10 minutes ahead, after
    /// correction, and one millisecond past either end is rejected naming `occurred_at`.
    #[test]
    fn window_bounds_are_exact_after_correction() {
        let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let max_age = TimeDelta::days(31);
        let ahead = TimeDelta::minutes(10);
        let ms = TimeDelta::milliseconds(1);
        // The client's clock is 3 days ahead; sent_at says so.
        let skew = TimeDelta::days(3);
        let skewed = clock(Some(&at(now() + skew)));
        for (occurred, ok) in
            [(now() - max_age, true), (now() - max_age - ms, false), (now() + ahead, true), (now() + ahead + ms, false)]
        {
            for (clock, client) in [(clock(None), occurred), (skewed, occurred + skew)] {
                let got = times(json!({"event_type": "a", "occurred_at": at(client)}), &clock);
                match got {
                    Ok((corrected, ..)) if ok => assert_eq!(corrected, Some(occurred.to_rfc3339())),
                    Err(e) if !ok => {
                        assert_eq!(e.field, "occurred_at");
                        let want = if occurred > now() { "10 minutes in the future" } else { "31 days in the past" };
                        assert!(e.reason.contains(want), "{e}");
                    }
                    other => panic!("{occurred} via {client}: {other:?}"),
                }
            }
        }
        // The age limit is the clock's: a deployment may shorten it.
        let short = Clock { max_age: TimeDelta::hours(2), ..clock(None) };
        let err = times(json!({"event_type": "a", "occurred_at": "2024-05-01T09:59:59Z"}), &short).unwrap_err();
        assert_eq!(err.reason, "is more than 2 hours in the past (after correcting for the client's clock by sent_at)");
        let year_0 = times(json!({"event_type": "a", "occurred_at": "0000-01-01T00:00:00Z"}), &clock(None));
        assert_eq!(year_0.unwrap_err().field, "occurred_at");
        let bad = times(json!({"event_type": "a", "sent_at": "2024-05-01T12:00:00"}), &clock(None)).unwrap_err();
        assert_eq!(bad.field, "sent_at");
    }

    /// Invariant: the corrected and original times and `sent_at` travel in the record, and a
    /// record written before them (none of the keys) still decodes, on both paths.
    #[test]
    fn clock_fields_round_trip_and_old_records_decode() {
        let raw = json!({"event_type": "a", "occurred_at": "2024-05-01T09:29:00Z"});
        let v = validate_from(&raw, &clock(Some("2024-05-01T09:30:00.250Z"))).unwrap();
        let e = v.enrich(&ServerFacts { received_at: now(), client_ip: None, user_agent: None });
        let record = crate::encode_record(&e);
        let text = std::str::from_utf8(&record).unwrap();
        assert!(
            text.contains(r#""original_occurred_at":"2024-05-01T09:29:00Z","sent_at":"2024-05-01T09:30:00.250Z""#),
            "{text}"
        );
        assert_eq!(crate::canonical::read(text).as_ref(), Some(&e), "canonical form");
        assert_eq!(crate::decode_record(&record).unwrap(), e);
        let old =
            text.replace(r#","original_occurred_at":"2024-05-01T09:29:00Z","sent_at":"2024-05-01T09:30:00.250Z""#, "");
        let decoded = crate::canonical::read(&old).expect("old records stay on the fast path");
        assert_eq!((decoded.original_occurred_at, decoded.sent_at), (None, None));
        let spaced = old.replacen("{\"v\":1,", "{ \"v\": 1, ", 1);
        let general = crate::decode_record(spaced.as_bytes()).unwrap();
        assert_eq!((general.original_occurred_at, general.sent_at, general.occurred_at), (None, None, e.occurred_at));
    }

    #[test]
    fn properties_size_limit_names_properties() {
        let big: serde_json::Map<String, Value> = (0..20).map(|i| (format!("k{i}"), json!("x".repeat(1000)))).collect();
        let err = validate_event(&json!({"event_type": "a", "properties": big}), now()).unwrap_err();
        assert_eq!(err.field, "properties");
        assert!(err.reason.contains("bytes"), "{err}");
    }

    #[test]
    fn enriched_event_check_catches_forged_stream_records() {
        let raw = json!({"event_type": "ok"});
        let v = validate_event(&raw, now()).unwrap();
        let mut e = v.enrich(&ServerFacts { received_at: now(), client_ip: None, user_agent: None });
        assert!(e.check().is_ok());
        e.event_type = "../../etc".into();
        assert_eq!(e.check().unwrap_err().field, "event_type");
    }
}
