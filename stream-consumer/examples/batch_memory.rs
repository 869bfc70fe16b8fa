//! Peak memory of the consumer's CPU path for one full batch (10,000 records of ~600 bytes):
//! decode, enrich, aggregate, Parquet bytes and DynamoDB items, as `Pipeline::process` builds
//! them before writing. Prints the process's peak RSS (VmHWM).
//!
//!     cargo run --release -p stream-consumer --example batch_memory

#![allow(clippy::print_stdout)]

use chrono::Utc;
use schemas::dynamo;
use stream_consumer::aggregate::Counts;
use stream_consumer::decode::decode_batch;
use stream_consumer::enrich::AgentCache;
use stream_consumer::lake::{LakeRow, encode_parquet};
use stream_consumer::sinks::dynamo::to_item;
use stream_consumer::testing::{record_of, sample_event, seq};

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let before = vm_hwm_kib();
    let now = Utc::now();
    let types = ["page_view", "click", "add_to_cart", "purchase", "search", "signup"];
    // A batch spans time: events arrive 0.1 ms apart (10,000 events/s on the shard).
    let received = |i: usize| now + chrono::Duration::microseconds(100 * i as i64);
    let records: Vec<_> =
        (0..10_000).map(|i| record_of(&seq(i), &sample_event(types[i % types.len()], None, received(i)))).collect();
    let bytes: usize = records.iter().map(|r| r.data.len()).sum();
    let decoded = decode_batch(&records);
    let agents = AgentCache::default();
    let facts = agents.lookup_all(decoded.events.iter().map(|d| d.event.user_agent.as_deref()));
    let counts = Counts::of(decoded.events.iter().map(|d| (&*d.event.event_type, d.event.received_at)));
    let rows: Vec<LakeRow<'_>> =
        decoded.events.iter().enumerate().map(|(i, d)| LakeRow { decoded: d, agent: facts.get(i) }).collect();
    let parquet = encode_parquet(&rows).expect("encode");
    let items: Vec<_> = decoded.events.iter().map(|d| to_item(dynamo::item(&d.event, 30))).collect();
    println!(
        "records={} input_bytes={} parquet_bytes={} dynamo_items={} event_types={} peak_rss_mib={:.1} (baseline {:.1})",
        records.len(),
        bytes,
        parquet.len(),
        items.len(),
        counts.totals.len(),
        vm_hwm_kib() as f64 / 1024.0,
        before as f64 / 1024.0
    );
}
