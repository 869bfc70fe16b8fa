//! Record builders and settings shared by unit tests, integration tests and benchmarks.

pub mod ledger_load;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use schemas::{EnrichedEvent, ServerFacts, encode_record, validate_event};
use uuid::Uuid;

use crate::decode::InputRecord;
use crate::handler::HandlerSettings;

/// Handler settings for tests and benchmarks: a 20 s sink budget, 24 h dedup window.
pub fn settings() -> HandlerSettings {
    HandlerSettings {
        dynamodb_ttl: crate::site_ttl::SiteTtl::uniform(30),
        dynamodb_concurrency: 8,
        sink_budget: std::time::Duration::from_secs(20),
        dedup_window_hours: 24,
    }
}

/// The shard used by [`event_record`] and [`raw_record`].
pub const SHARD: &str = "shardId-000000000000";

/// A realistic (~600 byte) event of `event_type`, with `id` or a fresh one.
pub fn sample_event(event_type: &str, id: Option<Uuid>, received_at: DateTime<Utc>) -> EnrichedEvent<'static> {
    let raw = serde_json::json!({
        "event_id": id.unwrap_or_else(Uuid::new_v4).to_string(),
        "event_type": event_type,
        "occurred_at": (received_at - chrono::Duration::milliseconds(1500)).to_rfc3339(),
        "anonymous_id": format!("anon-{}", fastrand::u32(..100_000)),
        "session_id": format!("sess-{}", fastrand::u32(..1_000_000)),
        "url": "https://shop.example.com/products/espresso-machine-deluxe?utm_source=newsletter&utm_medium=email",
        "referrer": "https://www.search.example/?q=espresso+machine",
        "properties": {"sku": "EM-1000", "price": 349.99, "currency": "EUR", "tags": ["kitchen", "coffee"], "experiment": {"id": "exp-42", "arm": "b"}},
    });
    validate_event(&raw, received_at).expect("sample is valid").enrich(&ServerFacts {
        received_at,
        client_ip: Some("203.0.113.77".parse().expect("ip")),
        user_agent: Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36".into()),
    })
}

/// A stream record carrying `event` at sequence number `seq` on [`SHARD`].
pub fn record_of(seq: &str, event: &EnrichedEvent<'_>) -> InputRecord {
    raw_record(seq, &encode_record(event))
}

/// A stream record carrying a fresh sample event.
pub fn event_record(seq: &str, event_type: &str, id: Option<Uuid>) -> InputRecord {
    record_of(seq, &sample_event(event_type, id, Utc::now()))
}

/// A stream record with arbitrary bytes.
pub fn raw_record(seq: &str, data: &[u8]) -> InputRecord {
    InputRecord {
        shard_id: SHARD.to_owned(),
        sequence_number: seq.to_owned(),
        approximate_arrival: Utc::now(),
        data: Bytes::copy_from_slice(data),
    }
}

/// Zero-padded sequence numbers sort like Kinesis' (which are fixed-width decimal strings).
pub fn seq(n: usize) -> String {
    format!("{:056}", n)
}

/// The benchmark batch: `n` realistic events of six types on one shard, received 0.1 ms apart
/// (10,000 events/s on the shard), so the batch spans time as a real one does.
pub fn bench_records(n: usize) -> Vec<InputRecord> {
    let now = Utc::now();
    let types = ["page_view", "click", "add_to_cart", "purchase", "search", "signup"];
    (0..n)
        .map(|i| {
            let received = now + chrono::Duration::microseconds(100 * i as i64);
            record_of(&seq(i), &sample_event(types[i % types.len()], None, received))
        })
        .collect()
}
