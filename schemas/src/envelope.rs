//! The Kinesis record envelope: a versioned wrapper so the consumer can quarantine what it does not understand.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::EnrichedEvent;
use crate::limits::MAX_RECORD_BYTES;
use crate::rules::ValidationError;

/// The version this build writes. A consumer meeting any other version quarantines the record
/// (reason `unknown_version`) instead of failing the shard.
pub const ENVELOPE_VERSION: u32 = 1;

/// One record on the stream: `{"v": 1, "event": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<'a> {
    pub v: u32,
    #[serde(borrow)]
    pub event: EnrichedEvent<'a>,
}

/// Why a stream record could not be turned into an event. Each variant has a stable
/// [`DecodeError::reason_code`] used as a metric label and in dead-letter rows.
#[derive(Debug, Error, PartialEq)]
pub enum DecodeError {
    #[error("record is {0} bytes, the limit is {MAX_RECORD_BYTES}")]
    TooLarge(usize),
    #[error("record is not valid UTF-8 (first bad byte at offset {0})")]
    InvalidUtf8(usize),
    #[error("record is not JSON: {0}")]
    NotJson(String),
    #[error("envelope has no numeric `v` field")]
    MissingVersion,
    #[error("envelope version {0} is not supported (this build reads version {ENVELOPE_VERSION})")]
    UnknownVersion(u64),
    #[error("envelope is malformed: {0}")]
    Malformed(String),
    #[error("event fails validation: {0}")]
    Invalid(ValidationError),
}

impl DecodeError {
    /// A short, stable label: the metric label and the `reason_code` column of dead-letter rows.
    pub fn reason_code(&self) -> &'static str {
        match self {
            DecodeError::TooLarge(_) => "too_large",
            DecodeError::InvalidUtf8(_) => "invalid_utf8",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::MissingVersion => "missing_version",
            DecodeError::UnknownVersion(_) => "unknown_version",
            DecodeError::Malformed(_) => "malformed_envelope",
            DecodeError::Invalid(_) => "invalid_event",
        }
    }
}

/// What separates the events packed into one stream record.
///
/// A record carries one encoded event or several joined by this byte. It can never occur inside
/// an encoded event: [`encode_record`] writes compact JSON, where a newline in a string is
/// escaped and there is no whitespace between tokens. So a record from before packing (one event)
/// reads the same way, as a record of one line.
pub const EVENT_SEPARATOR: u8 = b'\n';

/// The encoded events in one stream record, in order: one per [`EVENT_SEPARATOR`]-separated line.
/// Every line is yielded, even an empty one, so that the decoder reports what it cannot read.
pub fn record_events(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == EVENT_SEPARATOR)
}

/// Serializes one event as a stream record. The producer's events borrow the request body
/// ([`crate::ValidEvent::record`]), so nothing is copied between validation and this text.
pub fn encode_record(event: &EnrichedEvent<'_>) -> Vec<u8> {
    #[derive(Serialize)]
    struct EnvelopeRef<'a, 'e> {
        v: u32,
        event: &'a EnrichedEvent<'e>,
    }
    // Room for a typical event without regrowing; the record is built once and sent as is.
    let mut out = Vec::with_capacity(768);
    // Serializing plain data with string keys into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &EnvelopeRef { v: ENVELOPE_VERSION, event });
    out
}

/// Reads one stream record: size, UTF-8, JSON, version, shape, then the client rules again.
/// The records this build writes take a fast path (`canonical`) with the same results.
pub fn decode_record(bytes: &[u8]) -> Result<EnrichedEvent<'_>, DecodeError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8(e.valid_up_to()))?;
    // Records our producer wrote are read, and checked, in one pass.
    if let Some(event) = crate::canonical::read(text) {
        return Ok(event);
    }
    decode_general(text)
}

/// The general path: any JSON the envelope's serde derive takes, in one parse; only a record
/// that fails it is parsed again to say why, so that a future envelope is reported as an unknown
/// version rather than as a malformed record.
pub(crate) fn decode_general(text: &str) -> Result<EnrichedEvent<'_>, DecodeError> {
    let envelope = match serde_json::from_str::<Envelope>(text) {
        Ok(envelope) => envelope,
        Err(e) => return Err(why_not(text, e)),
    };
    if envelope.v != ENVELOPE_VERSION {
        return Err(DecodeError::UnknownVersion(u64::from(envelope.v)));
    }
    envelope.event.check().map_err(DecodeError::Invalid)?;
    Ok(envelope.event)
}

/// Classifies a record that does not parse as this build's envelope.
fn why_not(text: &str, envelope_error: serde_json::Error) -> DecodeError {
    if !text.trim_start().starts_with('{') {
        return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => DecodeError::Malformed("envelope must be a JSON object".into()),
            Err(e) => DecodeError::NotJson(e.to_string()),
        };
    }
    #[derive(Deserialize)]
    struct Probe {
        v: Option<serde_json::Value>,
    }
    let probe: Probe = match serde_json::from_str(text) {
        Ok(probe) => probe,
        Err(e) if e.is_data() => return DecodeError::Malformed(e.to_string()),
        Err(e) => return DecodeError::NotJson(e.to_string()),
    };
    match probe.v.as_ref().and_then(|v| v.as_u64()) {
        None => DecodeError::MissingVersion,
        Some(v) if v != u64::from(ENVELOPE_VERSION) => DecodeError::UnknownVersion(v),
        Some(_) => DecodeError::Malformed(envelope_error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ServerFacts, validate_event};
    use serde_json::json;

    fn sample() -> EnrichedEvent<'static> {
        let now = "2024-05-01T12:00:00Z".parse().unwrap();
        validate_event(&json!({"event_type": "click", "properties": {"a": [1, {"b": null}]}}), now)
            .unwrap()
            .enrich(&ServerFacts { received_at: now, client_ip: Some("10.1.2.3".parse().unwrap()), user_agent: None })
    }

    #[test]
    fn round_trip_is_exact() {
        let e = sample();
        assert_eq!(decode_record(&encode_record(&e)).unwrap(), e);
    }

    /// Invariant: a decoded event borrows the record's text (no copy per field), except where
    /// the JSON escaped something, which is decoded into an owned string with the same meaning.
    #[test]
    fn decoded_text_borrows_the_record_unless_escaped() {
        use std::borrow::Cow;
        let mut e = sample();
        e.url = Some("https://shop.example/a".into());
        e.referrer = Some("https://shop.example/\"quoted\"".into());
        let record = encode_record(&e);
        let decoded = decode_record(&record).unwrap();
        assert!(matches!(decoded.event_type, Cow::Borrowed("click")));
        assert!(matches!(decoded.url, Some(Cow::Borrowed("https://shop.example/a"))));
        assert!(matches!(decoded.referrer, Some(Cow::Owned(ref r)) if r == "https://shop.example/\"quoted\""));
        assert_eq!(decoded.properties.json(), r#"{"a":[1,{"b":null}]}"#);
        assert!(record.as_ptr_range().contains(&decoded.properties.json().as_ptr()), "properties were copied");
        assert_eq!(decoded.into_owned(), e);
    }

    /// Invariant: the producer's `site` travels in the record, and a record written before sites
    /// existed (no `site` key; still in flight or replayed during a deploy) reads as `None`, on
    /// the canonical fast path and on the general path alike.
    #[test]
    fn site_round_trips_and_old_records_without_it_still_decode() {
        let mut e = sample();
        e.site = Some("local-demo".into());
        let record = encode_record(&e);
        let text = std::str::from_utf8(&record).unwrap();
        assert!(text.contains(r#","site":"local-demo","properties":"#), "{text}");
        assert_eq!(decode_record(&record).unwrap(), e);
        assert_eq!(crate::canonical::read(text).as_ref(), Some(&e), "canonical form");

        let old = text.replace(r#","site":"local-demo""#, "");
        let decoded = decode_record(old.as_bytes()).unwrap();
        assert_eq!(decoded.site, None);
        assert_eq!(decoded.event_id, e.event_id);
        assert!(crate::canonical::read(&old).is_some_and(|c| c.site.is_none()), "old records stay on the fast path");
        // The general path (whitespace takes the record off the fast path) agrees.
        let spaced = old.replacen("{\"v\":1,", "{ \"v\": 1, ", 1);
        assert_eq!(decode_record(spaced.as_bytes()).unwrap().site, None);
    }

    /// Invariant: the producer's `country` travels in the record after `site`, and a record
    /// written before the lookup existed (or with it off) reads as `None`, on the canonical fast
    /// path and on the general path alike.
    #[test]
    fn country_round_trips_and_old_records_without_it_still_decode() {
        let mut e = sample();
        e.site = Some("local-demo".into());
        e.country = Some("DE".into());
        let record = encode_record(&e);
        let text = std::str::from_utf8(&record).unwrap();
        assert!(text.contains(r#","site":"local-demo","country":"DE","properties":"#), "{text}");
        assert_eq!(decode_record(&record).unwrap(), e);
        assert_eq!(crate::canonical::read(text).as_ref(), Some(&e), "canonical form");

        let old = text.replace(r#","country":"DE""#, "");
        assert!(crate::canonical::read(&old).is_some_and(|c| c.country.is_none()), "old records stay on the fast path");
        let spaced = old.replacen("{\"v\":1,", "{ \"v\": 1, ", 1);
        let decoded = decode_record(spaced.as_bytes()).unwrap();
        assert_eq!((decoded.country, decoded.site.as_deref()), (None, Some("local-demo")));
    }

    #[test]
    fn decode_reasons() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "not_json"),
            (vec![0xff, 0xfe, b'{'], "invalid_utf8"),
            (b"[1,2]".to_vec(), "malformed_envelope"),
            (br#"{"event": {}}"#.to_vec(), "missing_version"),
            (br#"{"v": 2, "event": {}}"#.to_vec(), "unknown_version"),
            (br#"{"v": 1, "event": {"event_type": "x"}}"#.to_vec(), "malformed_envelope"),
            (vec![b' '; MAX_RECORD_BYTES + 1], "too_large"),
        ];
        for (bytes, want) in cases {
            let got = decode_record(&bytes).unwrap_err();
            assert_eq!(got.reason_code(), want, "{got}");
        }
    }

    #[test]
    fn forged_event_type_is_invalid() {
        let mut e = sample();
        e.event_type = "DROP TABLE".into();
        assert_eq!(decode_record(&encode_record(&e)).unwrap_err().reason_code(), "invalid_event");
    }
}
