//! The request path without I/O: parse → validate → enrich → encode records, per event.

use bytes::Bytes;
use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use producer_api::ingest::{prepare, prepare_for_site};
use producer_api::intake::Intake;
use producer_api::sites::{Credentials, Sites};
use schemas::ServerFacts;

/// A client event; `occurred_at` two seconds before the receive time, as a live client sends.
fn event(i: usize, occurred_at: &str) -> serde_json::Value {
    let event_type = ["page_view", "click", "add_to_cart"][i % 3];
    serde_json::json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "event_type": event_type,
        "occurred_at": occurred_at,
        "anonymous_id": format!("anon-{i}"),
        "session_id": "sess-0193",
        "url": "https://shop.example.com/products/espresso-machine-deluxe?utm_source=newsletter&utm_medium=email",
        "referrer": "https://www.search.example/?q=espresso+machine",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        "properties": {"sku": "EM-1000", "price": 349.99, "currency": "EUR", "tags": ["kitchen", "coffee"]},
    })
}

fn bench(c: &mut Criterion) {
    let facts =
        ServerFacts { received_at: Utc::now(), client_ip: Some("203.0.113.7".parse().unwrap()), user_agent: None };
    let occurred_at = (facts.received_at - chrono::TimeDelta::seconds(2)).to_rfc3339();
    let single = Bytes::from(event(0, &occurred_at).to_string());
    let batch = Bytes::from(serde_json::Value::Array((0..500).map(|i| event(i, &occurred_at)).collect()).to_string());
    // Every event valid, or the benchmark would time rejections.
    assert_eq!(prepare(batch.clone(), Some("application/json"), None, &facts).unwrap().records.len(), 500);
    let mut g = c.benchmark_group("request_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("single_event", |b| {
        b.iter(|| prepare(single.clone(), Some("application/json"), None, &facts).unwrap())
    });
    g.throughput(Throughput::Elements(500));
    g.bench_function("batch_500", |b| {
        b.iter(|| prepare(batch.clone(), Some("application/json"), None, &facts).unwrap())
    });
    // The same bodies through the sites path: key lookup, origin check, per-IP and per-site
    // buckets. Limits no run reaches, so every iteration does the full work and is admitted.
    let sites = Sites::from_json(
        r#"{"sites": [{"id": "bench", "key": "pk_bench", "allowed_origins": ["https://shop.example.com"],
            "events_per_second": 4000000000, "burst": 4000000000,
            "per_ip_events_per_second": 4000000000, "per_ip_burst": 4000000000}]}"#,
        None,
    )
    .unwrap();
    let intake = Intake::default();
    let who = Credentials {
        header_key: Some("pk_bench"),
        body_key: None,
        origin: Some("https://shop.example.com"),
        client_ip: facts.client_ip,
    };
    g.throughput(Throughput::Elements(1));
    g.bench_function("single_event_with_site", |b| {
        b.iter(|| {
            prepare_for_site(single.clone(), Some("application/json"), None, &facts, &sites, who, &intake).unwrap()
        })
    });
    g.throughput(Throughput::Elements(500));
    g.bench_function("batch_500_with_site", |b| {
        b.iter(|| {
            prepare_for_site(batch.clone(), Some("application/json"), None, &facts, &sites, who, &intake).unwrap()
        })
    });
    // The same without any tracking plan: what the plans cost, measured in the same run.
    let no_plans = Intake { plans: Box::leak(Box::default()), ..Intake::default() };
    g.bench_function("batch_500_with_site_no_plans", |b| {
        b.iter(|| {
            prepare_for_site(batch.clone(), Some("application/json"), None, &facts, &sites, who, &no_plans).unwrap()
        })
    });
    g.finish();
    let mut admit = c.benchmark_group("site_admission");
    admit.throughput(Throughput::Elements(1));
    // Admission alone, per request (a single event or a whole batch costs the same).
    admit
        .bench_function("admit", |b| b.iter(|| sites.admit(std::hint::black_box(who), 1).map(|s| s.id.len()).unwrap()));
    admit.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
