//! The Kinesis record envelope: a versioned wrapper so the consumer can quarantine what it does not understand.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::{EnrichedEvent, ValidationError};
use crate::limits::MAX_EVENT_BYTES;

/// The version this build writes. A consumer meeting any other version quarantines the record
/// (reason `unknown_version`) instead of failing the shard.
pub const ENVELOPE_VERSION: u32 = 1;

/// Room for the server facts and the envelope on top of a maximal client event.
pub const MAX_RECORD_BYTES: usize = MAX_EVENT_BYTES + 4 * 1024;

/// One record on the stream: `{"v": 1, "event": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    pub event: EnrichedEvent,
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

/// Serializes one event as a stream record.
pub fn encode_record(event: &EnrichedEvent) -> Vec<u8> {
    #[derive(Serialize)]
    struct EnvelopeRef<'a> {
        v: u32,
        event: &'a EnrichedEvent,
    }
    // Serializing plain data with string keys into a Vec cannot fail.
    serde_json::to_vec(&EnvelopeRef { v: ENVELOPE_VERSION, event }).unwrap_or_default()
}

/// Reads one stream record: size, UTF-8, JSON, version, shape, then the client rules again.
pub fn decode_record(bytes: &[u8]) -> Result<EnrichedEvent, DecodeError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8(e.valid_up_to()))?;

    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => DecodeError::Malformed("envelope must be a JSON object".into()),
            Err(e) => DecodeError::NotJson(e.to_string()),
        });
    }
    // Read the version first, skipping the rest, so a future envelope shape is reported as an
    // unknown version rather than as a malformed record.
    #[derive(Deserialize)]
    struct Probe {
        v: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_str(text).map_err(|e| {
        if e.is_data() { DecodeError::Malformed(e.to_string()) } else { DecodeError::NotJson(e.to_string()) }
    })?;
    match probe.v.as_ref().and_then(|v| v.as_u64()) {
        None => return Err(DecodeError::MissingVersion),
        Some(v) if v != u64::from(ENVELOPE_VERSION) => return Err(DecodeError::UnknownVersion(v)),
        Some(_) => {}
    }
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    envelope.event.check().map_err(DecodeError::Invalid)?;
    Ok(envelope.event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ServerFacts, validate_event};
    use serde_json::json;

    fn sample() -> EnrichedEvent {
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
