//! Peak memory of the consumer's CPU path for one full batch (10,000 records of ~600 bytes):
//! decode, enrich, aggregate, Parquet bytes and DynamoDB items, as `Pipeline::process` builds
//! them before writing. Prints the process's peak RSS (VmHWM).
//!
//!     cargo run --release -p stream-consumer --example batch_memory
//!
//! With `--repeat N` it runs the CPU path N more times, for an instruction count that does not
//! depend on the machine's speed:
//!
//!     valgrind --tool=callgrind --toggle-collect='stream_consumer::testing::cpu_path' \
//!         target/profiling/examples/batch_memory --repeat 3
//!
//! With `LAKE_COLUMN_SIZES=1` it prints each lake column's size before and after compression.

#![allow(clippy::print_stdout)]

use parquet::file::reader::{FileReader, SerializedFileReader};
use schemas::dynamo;
use stream_consumer::decode::decode_batch;
use stream_consumer::enrich::AgentCache;
use stream_consumer::sinks::dynamo::to_item;
use stream_consumer::testing::{bench_records, cpu_path};

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()))
        .unwrap_or(0)
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
    let agents = AgentCache::default();
    let (counts, parquet) = cpu_path(&records, &agents).expect("encode");
    // The DynamoDB items are built from the same decoded batch while the Parquet bytes are held.
    let decoded = decode_batch(&records);
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
    if std::env::var_os("LAKE_COLUMN_SIZES").is_some() {
        let file = SerializedFileReader::new(parquet.clone()).expect("read the file back");
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
    if repeat > 0 {
        drop((counts, parquet, decoded, items));
        for _ in 0..repeat {
            cpu_path(&records, &agents).expect("encode");
        }
        // Later batches reuse the first one's freed memory (`stream_consumer::memory`), so the
        // peak stays one batch's.
        println!("peak_rss_mib_after_{repeat}_more={:.1}", vm_hwm_kib() as f64 / 1024.0);
    }
}
