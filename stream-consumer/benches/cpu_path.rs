//! The consumer's CPU path on realistic ~600-byte events: decode → validate → enrich →
//! aggregate → Parquet bytes, for one 10,000-record batch.

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stream_consumer::aggregate::Counts;
use stream_consumer::decode::decode_batch;
use stream_consumer::enrich::AgentCache;
use stream_consumer::lake::{LakeRow, encode_parquet};
use stream_consumer::testing::{record_of, sample_event, seq};

fn bench(c: &mut Criterion) {
    let now = Utc::now();
    let types = ["page_view", "click", "add_to_cart", "purchase", "search", "signup"];
    // A batch spans time: events arrive 0.1 ms apart (10,000 events/s on the shard).
    let received = |i: usize| now + chrono::Duration::microseconds(100 * i as i64);
    let records: Vec<_> =
        (0..10_000).map(|i| record_of(&seq(i), &sample_event(types[i % types.len()], None, received(i)))).collect();
    let bytes: usize = records.iter().map(|r| r.data.len()).sum();
    eprintln!("average record size: {} bytes", bytes / records.len());
    let agents = AgentCache::default();
    let mut g = c.benchmark_group("cpu_path");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.sample_size(20);
    g.bench_function("batch_10000", |b| {
        b.iter(|| {
            let decoded = decode_batch(&records);
            let facts = agents.lookup_all(decoded.events.iter().map(|d| d.event.user_agent.as_deref()));
            let counts = Counts::of(decoded.events.iter().map(|d| (&*d.event.event_type, d.event.received_at)));
            let rows: Vec<LakeRow<'_>> =
                decoded.events.iter().enumerate().map(|(i, d)| LakeRow { decoded: d, agent: facts.get(i) }).collect();
            let parquet = encode_parquet(&rows).unwrap();
            (counts, parquet.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
