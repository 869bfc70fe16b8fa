//! The consumer's CPU path on realistic ~600-byte events, for one fresh 10,000-record batch: the
//! real `Pipeline::process` — decode → validate → enrich → claim and count → Parquet bytes and
//! DynamoDB items → write — on the in-memory ledger and stores, so what is timed is the code
//! that runs, without the network.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use stream_consumer::in_memory::MemoryPipeline;
use stream_consumer::testing::{bench_records, settings};

fn bench(c: &mut Criterion) {
    // As the consumer's `main` does: the batches after the first reuse the first one's memory.
    let kept = stream_consumer::memory::keep_freed_memory();
    eprintln!("allocator keeps freed memory between batches: {kept}");
    let records = bench_records(10_000);
    let bytes: usize = records.iter().map(|r| r.data.len()).sum();
    eprintln!("average record size: {} bytes", bytes / records.len());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    // One pipeline, so the agent cache is warm as in a running process; its stores are emptied
    // before each batch (untimed), so every batch is new to the ledger and counted.
    let pipeline = MemoryPipeline::in_memory(settings());
    let mut g = c.benchmark_group("cpu_path");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.sample_size(20);
    g.bench_function("batch_10000", |b| {
        b.iter_batched(
            || pipeline.clear_stores(),
            |()| runtime.block_on(pipeline.process(&records)).expect("process"),
            BatchSize::PerIteration,
        );
    });
    g.finish();

    // What erasure adds to every batch (issue #23): each event's visitor hashes and the
    // object's Bloom filter, inside `plan_claims`, which the claim stores with the object.
    let decoded = stream_consumer::decode::decode_batch(&records).events;
    let (_, objects) = stream_consumer::plan::plan_claims(&decoded, "1", "10000");
    let filter_bytes: usize = objects.iter().map(|o| o.visitors.len()).sum();
    eprintln!("visitor filters: {filter_bytes} bytes for {} objects of {} events", objects.len(), decoded.len());
    let mut g = c.benchmark_group("visitor_filter");
    g.throughput(Throughput::Elements(decoded.len() as u64));
    g.bench_function("hash_and_filter_10000", |b| {
        b.iter(|| {
            let hashes: Vec<i64> = decoded
                .iter()
                .flat_map(|d| {
                    let e = &d.event;
                    schemas::visitors::event_visitors(
                        e.site.as_deref(),
                        e.anonymous_id.as_deref(),
                        e.user_id.as_deref(),
                    )
                })
                .flatten()
                .collect();
            schemas::visitors::VisitorFilter::of(&hashes)
        });
    });
    g.bench_function("plan_claims_10000", |b| {
        b.iter(|| stream_consumer::plan::plan_claims(&decoded, "1", "10000"));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
