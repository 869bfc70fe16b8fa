//! The consumer's CPU path on realistic ~600-byte events: decode → validate → enrich →
//! aggregate → Parquet bytes, for one 10,000-record batch.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stream_consumer::enrich::AgentCache;
use stream_consumer::testing::{bench_records, cpu_path};

fn bench(c: &mut Criterion) {
    // As the consumer's `main` does: the batches after the first reuse the first one's memory.
    let kept = stream_consumer::memory::keep_freed_memory();
    eprintln!("allocator keeps freed memory between batches: {kept}");
    let records = bench_records(10_000);
    let bytes: usize = records.iter().map(|r| r.data.len()).sum();
    eprintln!("average record size: {} bytes", bytes / records.len());
    let agents = AgentCache::default();
    let mut g = c.benchmark_group("cpu_path");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.sample_size(20);
    g.bench_function("batch_10000", |b| b.iter(|| cpu_path(&records, &agents).expect("encode")));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
