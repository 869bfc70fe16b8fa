//! Property tests: the decoder never panics on arbitrary bytes, and valid events round-trip exactly.

use std::net::IpAddr;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use schemas::event::CLIENT_FIELDS;
use schemas::{EVENT_SEPARATOR, ServerFacts, decode_record, encode_record, record_events, validate_event};
use serde_json::{Map, Value, json};

/// Any JSON value, nested up to 8 levels, with strings that may hold control characters and
/// object keys that are often the event's own field names (so validation gets past "unknown field").
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinities", |f| f.is_finite()).prop_map(Value::from),
        "(?s).{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(8, 200, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..8).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![proptest::sample::select(CLIENT_FIELDS.to_vec()).prop_map(str::to_owned), "(?s).{0,12}"]
}

/// Events that are valid often enough to exercise enrichment: a plausible value for each field
/// most of the time, any JSON value sometimes.
fn event_like() -> impl Strategy<Value = Value> {
    let text = prop_oneof![8 => "[^\\x00-\\x1f\\x7f]{1,40}".prop_map(Value::String), 1 => any_json()];
    let fields = proptest::collection::vec((proptest::sample::select(CLIENT_FIELDS.to_vec()), text), 0..6);
    let event_type = prop_oneof![8 => "[a-z][a-z0-9_]{0,10}".prop_map(Value::String), 1 => any_json()];
    let properties = proptest::collection::vec(("[a-z]{1,8}", any_json()), 0..6);
    (fields, event_type, properties).prop_map(|(fields, event_type, properties)| {
        let mut obj: Map<String, Value> = fields
            .into_iter()
            .filter(|(k, _)| !matches!(*k, "event_id" | "occurred_at" | "properties"))
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        obj.insert("event_type".into(), event_type);
        obj.insert("properties".into(), Value::Object(properties.into_iter().collect()));
        Value::Object(obj)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Invariant: a poison record is an error with a reason, never a panic that would block the shard.
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_record(&bytes);
    }

    /// Invariant: arbitrary JSON never panics the validator.
    #[test]
    fn validate_never_panics(s in "\\PC{0,300}") {
        if let Ok(v) = serde_json::from_str::<Value>(&s) {
            let _ = validate_event(&v, Utc::now());
        }
    }

    /// Invariant: arbitrary JSON values (not only text that happens to parse) never panic the
    /// validator, and neither do arbitrary envelopes the decoder.
    #[test]
    fn validate_and_decode_never_panic_on_any_json(value in any_json()) {
        let _ = validate_event(&value, Utc::now());
        let _ = decode_record(json!({"v": 1, "event": value}).to_string().as_bytes());
    }

    /// Invariant: whatever the API accepts, from any request and with any User-Agent header and
    /// client address, the consumer decodes to exactly the same event: an acknowledged event is
    /// never a poison record downstream.
    #[test]
    fn everything_accepted_decodes(
        event in event_like(),
        user_agent in proptest::option::of("(?s).{0,600}"),
        ip in any::<[u8; 16]>(),
    ) {
        let now = Utc::now();
        if let Ok(valid) = validate_event(&event, now) {
            let facts = ServerFacts { received_at: now, client_ip: Some(IpAddr::from(ip)), user_agent };
            let enriched = valid.enrich(&facts);
            let record = encode_record(&enriched);
            prop_assert!(!record.contains(&EVENT_SEPARATOR), "an encoded event is one line");
            prop_assert_eq!(decode_record(&record), Ok(enriched));
        }
    }

    /// Invariant: what the API accepts, the consumer decodes to exactly the same event.
    #[test]
    fn valid_events_round_trip(
        event_type in "[a-z][a-z0-9_]{0,63}",
        user in proptest::option::of("[^\\x00-\\x1f\\x7f]{1,128}"),
        url in proptest::option::of("https://[a-z]{1,20}\\.example/[a-zA-Z0-9/_-]{0,100}"),
        secs in 0i64..4_000_000_000,
        millis in 0u32..1000,
        prop_key in "[a-z]{1,10}",
        prop_val in any::<i64>(),
        ip in any::<[u8; 4]>(),
        country in proptest::option::of("[A-Z]{2}"),
    ) {
        let occurred: DateTime<Utc> = Utc.timestamp_opt(secs, millis * 1_000_000).unwrap();
        let raw = json!({
            "event_type": event_type,
            "user_id": user,
            "url": url,
            "occurred_at": occurred.to_rfc3339(),
            "properties": {prop_key: prop_val},
        });
        let valid = validate_event(&raw, occurred).unwrap();
        let facts = ServerFacts { received_at: occurred, client_ip: Some(ip.into()), user_agent: Some("ua".into()) };
        let mut event = valid.enrich(&facts);
        event.country = country.map(Into::into);
        let record = encode_record(&event);
        let decoded = decode_record(&record).unwrap();
        prop_assert_eq!(decoded, event);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Invariant: the producer's path (event as JSON text) and validation of a parsed value are
    /// one implementation: same verdict, same field, and the same event when valid.
    #[test]
    fn text_and_value_validation_agree(event in event_like()) {
        let now = Utc::now();
        let text = event.to_string();
        let by_value = validate_event(&event, now);
        let by_text = schemas::validate_json(&text, now);
        match (&by_value, &by_text) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(&a.event_type, &b.event_type);
                prop_assert_eq!(a.properties.to_map(), b.properties.to_map());
            }
            (Err(a), Err(b)) => prop_assert_eq!(&a.field, &b.field, "{} / {}", a, b),
            _ => prop_assert!(false, "value: {:?}, text: {:?}", by_value.map(|_| ()), by_text.map(|_| ())),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Invariant: the producer's path writes each event as one line whatever the client's
    /// whitespace (pretty-printed bodies, newlines in strings), so packed records split back into
    /// exactly the events that went in.
    #[test]
    fn packed_records_split_into_their_events(
        events in proptest::collection::vec(event_like(), 1..6),
        user_agent in proptest::option::of("(?s).{0,60}"),
    ) {
        let now = Utc::now();
        let facts = ServerFacts { received_at: now, client_ip: None, user_agent };
        let mut encoded = Vec::new();
        for event in &events {
            let pretty = serde_json::to_string_pretty(event).unwrap();
            if let Ok(valid) = schemas::validate_json(&pretty, now) {
                encoded.push(encode_record(&valid.enrich(&facts)));
            }
        }
        prop_assume!(!encoded.is_empty());
        let packed = encoded.join(&EVENT_SEPARATOR);
        let lines: Vec<&[u8]> = record_events(&packed).collect();
        prop_assert_eq!(lines.len(), encoded.len());
        for (line, one) in lines.iter().zip(&encoded) {
            prop_assert_eq!(*line, &one[..]);
            prop_assert!(decode_record(line).is_ok());
        }
    }
}
