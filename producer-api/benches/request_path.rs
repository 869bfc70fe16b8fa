//! The request path without I/O: parse → validate → enrich → encode records, per event.

use bytes::Bytes;
use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use producer_api::country::{CountryDb, CountryLookup, GEOIP_COUNTRY_DB};
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
    let sites = bench_sites();
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

/// A site with limits no run reaches, so every iteration does the full work and is admitted.
fn bench_sites() -> Sites {
    Sites::from_json(
        r#"{"sites": [{"id": "bench", "key": "pk_bench", "allowed_origins": ["https://shop.example.com"],
            "events_per_second": 4000000000, "burst": 4000000000,
            "per_ip_events_per_second": 4000000000, "per_ip_burst": 4000000000}]}"#,
        None,
    )
    .unwrap()
}

/// The request path with the country lookup (#23), on the database scripts/geoip.sh installs
/// (or `GEOIP_COUNTRY_DB`), next to the same requests without it (`request_path/*_with_site`):
/// one lookup per request, so its cost per event is the lookup divided by the batch size. And
/// the lookup alone, over many public addresses (a tree walk's depth depends on the network, so
/// one address would measure one path).
fn country(c: &mut Criterion) {
    let Some(path) = country_db() else {
        eprintln!("country lookup benchmarks skipped: no database (run scripts/geoip.sh or set {GEOIP_COUNTRY_DB})");
        return;
    };
    let facts = ServerFacts { received_at: Utc::now(), client_ip: Some(PUBLIC_IP.parse().unwrap()), user_agent: None };
    let occurred_at = (facts.received_at - chrono::TimeDelta::seconds(2)).to_rfc3339();
    let single = Bytes::from(event(0, &occurred_at).to_string());
    let batch = Bytes::from(serde_json::Value::Array((0..500).map(|i| event(i, &occurred_at)).collect()).to_string());
    let sites = bench_sites();
    let who = Credentials {
        header_key: Some("pk_bench"),
        body_key: None,
        origin: Some("https://shop.example.com"),
        client_ip: facts.client_ip,
    };
    let lookup = std::sync::Arc::new(CountryLookup::On(CountryDb::open(&path).unwrap()));
    let with_country = Intake { countries: lookup, ..Intake::default() };
    let prepared = prepare_for_site(single.clone(), Some("application/json"), None, &facts, &sites, who, &with_country);
    let record = String::from_utf8(prepared.unwrap().records[0].data.to_vec()).unwrap();
    assert!(record.contains(r#""country":""#), "the lookup places {PUBLIC_IP}: {record}");
    let mut g = c.benchmark_group("request_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("single_event_with_site_and_country", |b| {
        b.iter(|| {
            prepare_for_site(single.clone(), Some("application/json"), None, &facts, &sites, who, &with_country)
                .unwrap()
        })
    });
    g.throughput(Throughput::Elements(500));
    g.bench_function("batch_500_with_site_and_country", |b| {
        b.iter(|| {
            prepare_for_site(batch.clone(), Some("application/json"), None, &facts, &sites, who, &with_country).unwrap()
        })
    });
    g.finish();

    let db = CountryDb::open(&path).unwrap();
    let mut rng = fastrand::Rng::with_seed(23);
    // Unicast IPv4 outside 0/8 and the multicast and reserved space above 224/8.
    let addresses: Vec<std::net::IpAddr> =
        (0..LOOKUP_ADDRESSES).map(|_| std::net::Ipv4Addr::from(rng.u32(0x0100_0000..0xE000_0000)).into()).collect();
    let mut lookup = c.benchmark_group("country_lookup");
    lookup.throughput(Throughput::Elements(LOOKUP_ADDRESSES as u64));
    lookup.bench_function("ipv4_unicast", |b| {
        b.iter(|| addresses.iter().filter(|ip| db.country(**ip).is_some()).count())
    });
    lookup.finish();
}

/// A public address the database places (a documentation address would not be).
const PUBLIC_IP: &str = "81.2.69.142";
/// Addresses per iteration of the lookup-alone benchmark.
const LOOKUP_ADDRESSES: usize = 1024;

/// The country database: `GEOIP_COUNTRY_DB`, else where scripts/geoip.sh installs it.
fn country_db() -> Option<std::path::PathBuf> {
    let path = std::env::var_os(GEOIP_COUNTRY_DB)
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../.local/geoip/country.mmdb").into());
    path.exists().then_some(path)
}

criterion_group!(benches, bench, country);
criterion_main!(benches);
