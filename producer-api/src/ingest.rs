//! The request path without I/O: body decoding, validation, enrichment and record encoding.

use std::io::Read;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use schemas::event::BorrowedStr;
use schemas::event::{Clock, parse_timestamp, validate_json_at};
use schemas::limits::{MAX_BATCH_EVENTS, MAX_REQUEST_BYTES};
use schemas::{ServerFacts, ValidationError, encode_record};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::IngestError;
use crate::intake::Intake;
use crate::sites::{Credentials, Sites};
use crate::tracking_plan::Verdict;

/// One event ready for Kinesis.
#[derive(Debug, Clone)]
pub struct PreparedRecord {
    /// Position of the event in the request, for error reporting.
    pub index: usize,
    pub event_id: Uuid,
    /// The event ID as text: random, so records spread evenly over shards (see ARCHITECTURE.md).
    pub partition_key: String,
    pub data: Bytes,
}

/// A client event that failed validation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejected {
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// The outcome of the pure request path.
#[derive(Debug, Default)]
pub struct Prepared {
    pub records: Vec<PreparedRecord>,
    pub rejected: Vec<Rejected>,
}

/// Whether a `Content-Type` is one we read: `application/json`, or `text/plain` (what
/// `navigator.sendBeacon` sends for a string body), each with any parameters.
pub fn content_type_allowed(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json") || essence.eq_ignore_ascii_case("text/plain")
}

/// Undoes `Content-Encoding` (`gzip` or none), refusing to inflate past [`MAX_REQUEST_BYTES`]
/// so a small compressed body cannot expand into an unbounded allocation.
pub fn decode_body(body: Bytes, content_encoding: Option<&str>) -> Result<Bytes, IngestError> {
    match content_encoding.map(str::trim) {
        None | Some("") | Some("identity") => {
            if body.len() > MAX_REQUEST_BYTES {
                return Err(IngestError::TooLarge(format!("body exceeds {MAX_REQUEST_BYTES} bytes")));
            }
            Ok(body)
        }
        Some(enc) if enc.eq_ignore_ascii_case("gzip") => {
            // Capped: a 1 MiB body must not reserve 4 MiB when at most 1 MiB + 1 is ever kept.
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(MAX_REQUEST_BYTES + 1));
            // Multi: a gzip body may be several members (RFC 1952); GzDecoder would read the first
            // and silently drop the rest of an acknowledged body, and ignore trailing garbage.
            let mut decoder = flate2::read::MultiGzDecoder::new(&body[..]).take(MAX_REQUEST_BYTES as u64 + 1);
            decoder.read_to_end(&mut out).map_err(|_| IngestError::BadRequest("body is not valid gzip".into()))?;
            if out.len() > MAX_REQUEST_BYTES {
                return Err(IngestError::TooLarge(format!("decompressed body exceeds {MAX_REQUEST_BYTES} bytes")));
            }
            Ok(Bytes::from(out))
        }
        Some(_) => Err(IngestError::UnsupportedMediaType("Content-Encoding must be gzip or absent".into())),
    }
}

/// A request body split into its events (and the batch envelope's `site_key` and `sent_at`, if any).
#[derive(Debug)]
pub struct Envelope<'a> {
    /// The envelope's `site_key`: how `navigator.sendBeacon`, which cannot set headers, sends it.
    pub site_key: Option<String>,
    /// The envelope's `sent_at`: the client's clock when it sent the request, which corrects the
    /// `occurred_at` of every event without a `sent_at` of its own (see [`Clock`]).
    pub sent_at: Option<DateTime<Utc>>,
    pub events: Vec<&'a RawValue>,
}

/// Splits a body into client events, as JSON text borrowed from the body: one object, an
/// array, or the envelope `{"events": [...]}` with optional `site_key` and `sent_at`. Events
/// are not parsed into trees here; each is read once, by [`prepare_events`].
pub fn parse_events(body: &[u8]) -> Result<Envelope<'_>, IngestError> {
    let not_json = |e: serde_json::Error| IngestError::BadRequest(format!("body is not JSON: {e}"));
    let text = std::str::from_utf8(body)
        .map_err(|e| IngestError::BadRequest(format!("body is not JSON: invalid UTF-8 at byte {}", e.valid_up_to())))?;
    let mut site_key = None;
    let mut sent_at = None;
    let events: Vec<&RawValue> = match text.trim_start().as_bytes().first() {
        Some(b'[') => serde_json::from_str(text).map_err(not_json)?,
        Some(b'{') => {
            let fields: Vec<(BorrowedStr<'_>, &RawValue)> =
                serde_json::from_str::<TopObject<'_>>(text).map_err(not_json)?.0;
            let events = fields.iter().find(|(name, v)| name.0 == "events" && v.get().starts_with('['));
            let is_envelope = events.is_some() && fields.iter().all(|(n, _)| ENVELOPE_FIELDS.contains(&&*n.0));
            // Two `events` lists would be one batch to one reader and another to the next (and
            // one silently lost); two keys, one site or the other. Keys are compared unescaped.
            // A single event's own repeated keys are its validation's to name.
            if is_envelope && let Some(twice) = repeated_key(&fields) {
                return Err(IngestError::BadRequest(format!("the envelope has a duplicate key \"{twice}\"")));
            }
            match events {
                Some((_, list)) if is_envelope => {
                    if let Some((_, key)) = fields.iter().find(|(n, _)| n.0 == "site_key") {
                        site_key =
                            Some(serde_json::from_str::<String>(key.get()).map_err(|_| {
                                IngestError::BadRequest("the envelope's site_key must be a string".into())
                            })?);
                    }
                    if let Some((_, sent)) = fields.iter().find(|(n, _)| n.0 == "sent_at") {
                        sent_at = envelope_sent_at(sent.get())?;
                    }
                    serde_json::from_str(list.get()).map_err(not_json)?
                }
                // A single event: the whole body is its text.
                _ => vec![serde_json::from_str(text).map_err(not_json)?],
            }
        }
        _ => {
            serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(not_json)?;
            return Err(IngestError::BadRequest(
                "body must be an event object, an array of events or {\"events\": [...]}".into(),
            ));
        }
    };
    if events.is_empty() {
        return Err(IngestError::BadRequest("no events in body".into()));
    }
    if events.len() > MAX_BATCH_EVENTS {
        return Err(IngestError::TooLarge(format!(
            "{} events in one request, the limit is {MAX_BATCH_EVENTS}",
            events.len()
        )));
    }
    Ok(Envelope { site_key, sent_at, events })
}

/// The fields an envelope may have; any other makes the body a single (invalid) event.
const ENVELOPE_FIELDS: [&str; 3] = ["events", "site_key", "sent_at"];

/// The envelope's `sent_at`: a timestamp as `occurred_at` takes it, or null. A bad one is the
/// whole request's fault (every event would be corrected by it), so it is a 400.
fn envelope_sent_at(json: &str) -> Result<Option<DateTime<Utc>>, IngestError> {
    let bad = |reason: String| IngestError::BadRequest(format!("the envelope's sent_at {reason}"));
    match serde_json::from_str::<Option<BorrowedStr<'_>>>(json) {
        Ok(None) => Ok(None),
        Ok(Some(text)) => parse_timestamp("sent_at", &text.0).map(Some).map_err(|e| bad(e.reason)),
        Err(_) => Err(bad("must be a string".into())),
    }
}

/// The first key of `fields` that an earlier one has too.
fn repeated_key<'f>(fields: &'f [(BorrowedStr<'_>, &RawValue)]) -> Option<&'f str> {
    fields.iter().enumerate().find(|(i, (k, _))| fields[..*i].iter().any(|(e, _)| e.0 == k.0)).map(|(_, (k, _))| &*k.0)
}

/// A top-level object's fields, values left as raw JSON text.
struct TopObject<'a>(Vec<(BorrowedStr<'a>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for TopObject<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TopObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    fields.push(entry);
                }
                Ok(TopObject(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// Validates and enriches each event, stamped with `site` (the admitting key's site id), and
/// encodes the valid ones as stream records. `sent_at` is the envelope's; `intake` holds the
/// deployment's rules.
pub fn prepare_events(
    events: &[&RawValue],
    facts: &ServerFacts,
    site: Option<&str>,
    sent_at: Option<DateTime<Utc>>,
    intake: &Intake,
) -> Prepared {
    let mut prepared = Prepared { records: Vec::with_capacity(events.len()), rejected: Vec::new() };
    // Once per request: the anonymised address, the sanitised header agent, the site and the
    // country are the same for every event. The country is looked up in the full address, which
    // `stored` has already dropped for its anonymised form; the full one goes nowhere else.
    let mut stored = facts.stored();
    stored.site = site.map(str::to_owned);
    stored.country = facts.client_ip.and_then(|ip| intake.countries.country(ip)).map(str::to_owned);
    let clock = Clock { received_at: facts.received_at, sent_at, max_age: intake.max_event_age };
    for (index, raw) in events.iter().enumerate() {
        match validate_json_at(raw.get(), &clock) {
            Ok(valid) => {
                let violations = match intake.plans.check(&valid.event_type, valid.properties.json()) {
                    Verdict::Clean => None,
                    Verdict::Warn(violations) => Some(violations),
                    Verdict::Reject(v) => {
                        let reason = v.reason(&valid.event_type);
                        prepared.rejected.push(Rejected { index, field: v.pointer, reason });
                        continue;
                    }
                };
                let mut record = valid.record(&stored);
                record.plan_violations = violations.map(std::borrow::Cow::Owned);
                let event_id = record.event_id;
                let data = Bytes::from(encode_record(&record));
                prepared.records.push(PreparedRecord { index, event_id, partition_key: event_id.to_string(), data });
            }
            Err(ValidationError { field, reason }) => prepared.rejected.push(Rejected { index, field, reason }),
        }
    }
    prepared
}

/// The whole pure path for one request body.
pub fn prepare(
    body: Bytes,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    facts: &ServerFacts,
) -> Result<Prepared, IngestError> {
    if !content_type_allowed(content_type) {
        return Err(IngestError::UnsupportedMediaType("Content-Type must be application/json or text/plain".into()));
    }
    let body = decode_body(body, content_encoding)?;
    let envelope = parse_events(&body)?;
    Ok(prepare_events(&envelope.events, facts, None, envelope.sent_at, default_intake()))
}

/// The rules [`prepare`] applies: the defaults, set up once (as a server does at start-up).
fn default_intake() -> &'static Intake {
    static DEFAULT: std::sync::OnceLock<Intake> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(Intake::default)
}

/// The request path every front end runs (local server, API Gateway v1 and v2): the body is
/// read, then the site is admitted (key, origin, limits: see [`Sites::admit`]), and only then
/// are events validated and encoded. A refused request stores nothing.
pub fn prepare_for_site(
    body: Bytes,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    facts: &ServerFacts,
    sites: &Sites,
    who: Credentials<'_>,
    intake: &Intake,
) -> Result<Prepared, IngestError> {
    if !content_type_allowed(content_type) {
        return Err(IngestError::UnsupportedMediaType("Content-Type must be application/json or text/plain".into()));
    }
    let body = decode_body(body, content_encoding)?;
    let envelope = parse_events(&body)?;
    let who = Credentials { body_key: envelope.site_key.as_deref(), ..who };
    let site = sites.admit(who, envelope.events.len())?;
    Ok(prepare_events(&envelope.events, facts, Some(&*site.id), envelope.sent_at, intake))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn facts() -> ServerFacts {
        ServerFacts { received_at: Utc::now(), client_ip: None, user_agent: None }
    }

    fn check(body: &str, want: Result<(usize, usize), u16>) {
        let got = prepare(Bytes::from(body.to_owned()), Some("application/json"), None, &facts())
            .map(|p| (p.records.len(), p.rejected.len()))
            .map_err(|e| e.status().as_u16());
        assert_eq!(got, want, "body: {body}");
    }

    #[test]
    fn body_shapes() {
        check(r#"{"event_type":"a"}"#, Ok((1, 0)));
        check(r#"[{"event_type":"a"},{"event_type":"B"}]"#, Ok((1, 1)));
        check(r#"{"events":[{"event_type":"a"},{"event_type":"b"}]}"#, Ok((2, 0)));
        check(r#"{"events":[{"event_type":"a"}], "x": 1}"#, Ok((0, 1)));
        check(r#"{"site_key":"pk_x","events":[{"event_type":"a"}]}"#, Ok((1, 0)));
        check(r#"{"events":[{"event_type":"a"}],"site_key":7}"#, Err(400));
        check("[]", Err(400));
        check("42", Err(400));
        check("{not json", Err(400));
        let many = format!("[{}]", vec![r#"{"event_type":"a"}"#; MAX_BATCH_EVENTS + 1].join(","));
        check(&many, Err(413));
    }

    /// Invariant (#20): a key twice anywhere in a body is refused naming the key: in the
    /// envelope the whole request (400), in an event that event, in `properties` that event with
    /// the object's path; escaped spellings of a key are the same key.
    #[test]
    fn duplicate_keys_are_refused_naming_the_key() {
        let whole = |body: &str| prepare(Bytes::from(body.to_owned()), Some("application/json"), None, &facts());
        for (body, reason) in [
            (r#"{"events":[{"event_type":"a"}],"events":[{"event_type":"b"}]}"#, r#"duplicate key "events""#),
            (r#"{"events":[{"event_type":"a"}],"\u0065vents":[]}"#, r#"duplicate key "events""#),
            (r#"{"site_key":"pk_a","events":[{"event_type":"a"}],"site_key":"pk_b"}"#, r#"duplicate key "site_key""#),
        ] {
            let err = whole(body).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{body}");
            assert!(err.to_string().contains(reason), "{body}: {err}");
        }
        let body = r#"[{"event_type":"a"},{"event_type":"a","event_type":"b"},
            {"event_type":"a","properties":{"x":{"k":1,"\u006b":2}}},{"event_type":"ok"}]"#;
        let p = whole(body).unwrap();
        assert_eq!(p.records.len(), 2, "the valid events are still accepted");
        assert_eq!(
            p.rejected,
            vec![
                Rejected { index: 1, field: String::new(), reason: r#"has a duplicate key "event_type""#.into() },
                Rejected { index: 2, field: "properties.x".into(), reason: r#"has a duplicate key "k""#.into() },
            ]
        );
        // A single-event body is that event: its repeated key is a per-event rejection.
        check(r#"{"event_type":"a","url":"https://x/","url":"https://y/"}"#, Ok((0, 1)));
    }

    /// Invariant (#20): the nil and max UUIDs are refused as `event_id`, per event.
    #[test]
    fn nil_and_max_event_ids_are_rejected_per_event() {
        let body = r#"[{"event_type":"a","event_id":"00000000-0000-0000-0000-000000000000"},
            {"event_type":"a","event_id":"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"},{"event_type":"a"}]"#;
        let p = prepare(Bytes::from(body), Some("application/json"), None, &facts()).unwrap();
        assert_eq!(p.records.len(), 1);
        assert_eq!(
            p.rejected.iter().map(|r| (r.index, r.field.as_str())).collect::<Vec<_>>(),
            [(0, "event_id"), (1, "event_id")]
        );
    }

    /// Invariant: the envelope's `sent_at` corrects every event that has none of its own; a bad
    /// one refuses the request; an event's own `sent_at` wins.
    #[test]
    fn envelope_sent_at_corrects_its_events() {
        let received_at: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().unwrap();
        let facts = ServerFacts { received_at, client_ip: None, user_agent: None };
        // The client's clock is a year behind.
        let body = r#"{"sent_at":"2025-12-06T12:00:00Z","events":[
            {"event_type":"a","occurred_at":"2025-12-06T11:59:00Z"},
            {"event_type":"b","occurred_at":"2026-12-06T11:58:00Z","sent_at":"2026-12-06T12:00:00Z"},
            {"event_type":"c","occurred_at":"2026-12-06T11:59:00Z"}]}"#;
        let prepared = prepare(Bytes::from(body), Some("application/json"), None, &facts).unwrap();
        assert_eq!(prepared.records.len(), 2, "{:?}", prepared.rejected);
        let [(0, a), (1, b)] = [0, 1].map(|i| {
            let r = &prepared.records[i];
            (r.index, schemas::decode_record(&r.data).unwrap().into_owned())
        }) else {
            panic!("records out of order")
        };
        assert_eq!(a.occurred_at, "2026-12-06T11:59:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(a.original_occurred_at, Some("2025-12-06T11:59:00Z".parse().unwrap()));
        assert_eq!(a.sent_at, Some("2025-12-06T12:00:00Z".parse().unwrap()));
        assert_eq!(b.occurred_at, "2026-12-06T11:58:00Z".parse::<DateTime<Utc>>().unwrap(), "own sent_at wins");
        // The third event's correct clock, corrected by the envelope's year, lands a year ahead.
        assert_eq!(prepared.rejected[0].index, 2);
        assert_eq!(prepared.rejected[0].field, "occurred_at");
        for bad in [r#""yesterday""#, "17"] {
            let body = format!(r#"{{"sent_at":{bad},"events":[{{"event_type":"a"}}]}}"#);
            let err = prepare(Bytes::from(body), Some("application/json"), None, &facts).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{err}");
            assert!(err.to_string().contains("sent_at"), "{err}");
        }
    }

    /// Invariant: an enforced plan rejects the event naming the JSON Pointer and the rule; a
    /// warned one is accepted with its violations in the record; types without a plan are free.
    #[test]
    fn tracking_plans_reject_or_warn() {
        let body = r#"[
            {"event_type":"purchase","properties":{"amount":-5,"currency":"EUR"}},
            {"event_type":"purchase","properties":{"amount":5,"currency":"EUR"}},
            {"event_type":"search","properties":{"results":3}},
            {"event_type":"unplanned","properties":{"amount":"x"}}]"#;
        let prepared = prepare(Bytes::from(body), Some("application/json"), None, &facts()).unwrap();
        assert_eq!(prepared.rejected.len(), 1);
        let r = &prepared.rejected[0];
        assert_eq!((r.index, r.field.as_str()), (0, "/properties/amount"));
        assert!(r.reason.contains("tracking plan purchase, rule minimum"), "{}", r.reason);
        let records: Vec<_> =
            prepared.records.iter().map(|r| schemas::decode_record(&r.data).unwrap().into_owned()).collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].plan_violations, None, "a clean purchase");
        let warned: serde_json::Value = serde_json::from_str(records[1].plan_violations.as_deref().unwrap()).unwrap();
        assert_eq!(warned[0]["pointer"], "/properties/query");
        assert_eq!(warned[0]["rule"], "required");
        assert_eq!(records[2].plan_violations, None, "no plan, no rules");
    }

    #[test]
    fn envelope_key_is_read() {
        let e = parse_events(br#"{"events":[{"event_type":"a"}],"site_key":"pk_local_demo"}"#).unwrap();
        assert_eq!((e.site_key.as_deref(), e.events.len()), (Some("pk_local_demo"), 1));
        assert_eq!(parse_events(br#"[{"event_type":"a"}]"#).unwrap().site_key, None);
    }

    #[test]
    fn content_types() {
        assert!(content_type_allowed(Some("application/json; charset=utf-8")));
        assert!(content_type_allowed(Some("text/plain;charset=UTF-8")));
        assert!(!content_type_allowed(Some("application/x-www-form-urlencoded")));
        assert!(!content_type_allowed(None));
    }

    #[test]
    fn gzip_bomb_is_refused() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(&vec![b' '; MAX_REQUEST_BYTES + 10]).unwrap();
        let gz = Bytes::from(enc.finish().unwrap());
        assert!(gz.len() < 10_000);
        assert_eq!(decode_body(gz, Some("gzip")).unwrap_err().status().as_u16(), 413);
        assert_eq!(decode_body(Bytes::from_static(b"xx"), Some("br")).unwrap_err().status().as_u16(), 415);
        assert_eq!(decode_body(Bytes::from_static(b"xx"), Some("gzip")).unwrap_err().status().as_u16(), 400);
    }

    /// Invariant: every byte of a gzip body is read: all members, and trailing garbage is an error.
    #[test]
    fn gzip_members_are_all_read_and_trailing_garbage_refused() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let gz = |text: &str| {
            let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
            enc.write_all(text.as_bytes()).unwrap();
            enc.finish().unwrap()
        };
        let two = [gz("[{\"event_type\":\"a\"},"), gz("{\"event_type\":\"b\"}]")].concat();
        assert_eq!(
            &decode_body(Bytes::from(two), Some("gzip")).unwrap()[..],
            br#"[{"event_type":"a"},{"event_type":"b"}]"#
        );
        let garbage = [gz("{\"event_type\":\"a\"}"), b"trailing".to_vec()].concat();
        assert_eq!(decode_body(Bytes::from(garbage), Some("gzip")).unwrap_err().status().as_u16(), 400);
    }
}
