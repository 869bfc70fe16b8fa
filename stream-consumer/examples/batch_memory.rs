//! Peak memory of one full batch (10,000 records of ~600 bytes) through the real
//! `Pipeline::process` on the in-memory ledger and stores: decode, enrich, claim and count,
//! Parquet bytes and DynamoDB items, written. The stores keep what was written (the Parquet
//! bytes and the items), so the peak includes one batch's output held after the batch. Prints
//! the process's peak RSS (VmHWM).
//!
//!     cargo run --release -p stream-consumer --example batch_memory
//!
//! With `--repeat N` it runs N more fresh batches (the stores emptied first), for an
//! instruction count that does not depend on the machine's speed:
//!
//!     valgrind --tool=callgrind --toggle-collect='batch_memory::process_batch' \
//!         target/profiling/examples/batch_memory --repeat 3
//!
//! With `LAKE_COLUMN_SIZES=1` it prints each lake column's size before and after compression.

#![allow(clippy::print_stdout)]

use parquet::file::reader::{FileReader, SerializedFileReader};
use stream_consumer::BatchReport;
use stream_consumer::decode::InputRecord;
use stream_consumer::in_memory::MemoryPipeline;
use stream_consumer::testing::{bench_records, settings};
use tokio::runtime::Runtime;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()))
        .unwrap_or(0)
}

/// One batch through the real pipeline. Never inlined, so that callgrind can count exactly its
/// instructions (`--toggle-collect`).
#[inline(never)]
fn process_batch(runtime: &Runtime, pipeline: &MemoryPipeline, records: &[InputRecord]) -> BatchReport {
    runtime.block_on(pipeline.process(records)).expect("process")
}

fn main() {
    // As the consumer's `main` does; the peak is one batch's either way.
    stream_consumer::memory::keep_freed_memory();
    let repeat: usize = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [flag, n] if flag == "--repeat" => n.parse().expect("--repeat takes a number"),
        _ => 0,
    };
    let before = vm_hwm_kib();
    let records = bench_records(10_000);
    let bytes: usize = records.iter().map(|r| r.data.len()).sum();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let pipeline = MemoryPipeline::in_memory(settings());
    let report = process_batch(&runtime, &pipeline, &records);
    let objects = pipeline.lake.objects();
    let parquet: Vec<_> = report.lake_objects.iter().map(|key| objects[key].body.clone()).collect();
    println!(
        "records={} input_bytes={} parquet_bytes={} dynamo_items={} event_types={} peak_rss_mib={:.1} (baseline {:.1})",
        records.len(),
        bytes,
        parquet.iter().map(|p| p.len()).sum::<usize>(),
        pipeline.items.items().len(),
        pipeline.ledger.counts().len(),
        vm_hwm_kib() as f64 / 1024.0,
        before as f64 / 1024.0
    );
    if std::env::var_os("LAKE_COLUMN_SIZES").is_some() {
        for file in &parquet {
            let file = SerializedFileReader::new(file.clone()).expect("read the file back");
            for c in file.metadata().row_group(0).columns() {
                println!(
                    "{:20} {:>9} {:>9} {:?}",
                    c.column_path().string(),
                    c.uncompressed_size(),
                    c.compressed_size(),
                    c.compression()
                );
            }
        }
    }
    if repeat > 0 {
        drop((objects, parquet));
        for _ in 0..repeat {
            pipeline.clear_stores();
            process_batch(&runtime, &pipeline, &records);
        }
        // Later batches reuse the first one's freed memory (`stream_consumer::memory`), so the
        // peak stays one batch's.
        println!("peak_rss_mib_after_{repeat}_more={:.1}", vm_hwm_kib() as f64 / 1024.0);
    }
}
