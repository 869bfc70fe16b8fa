//! Property tests: the decoder never panics on arbitrary bytes, and valid events round-trip exactly.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use schemas::{ServerFacts, decode_record, encode_record, validate_event};
use serde_json::{Value, json};

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
        let event = valid.enrich(&facts);
        let decoded = decode_record(&encode_record(&event)).unwrap();
        prop_assert_eq!(decoded, event);
    }
}
