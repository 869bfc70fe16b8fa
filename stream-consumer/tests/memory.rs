//! The consumer's allocator settings, in a test binary of their own: they are process-wide.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use stream_consumer::memory::keep_freed_memory;

/// The process's resident set in KiB, as the kernel counts it.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()))
        .expect("a VmRSS line")
}

/// Invariant: memory a batch frees stays in the process for the next batch, so the next batch
/// does not fault its pages in again (glibc's defaults would unmap a block this size on free).
#[test]
fn freed_batch_memory_stays_in_the_process() {
    assert!(keep_freed_memory(), "glibc refused the allocator settings");
    let before = rss_kib();
    let block = std::hint::black_box(vec![1u8; 16 << 20]);
    let touched = rss_kib();
    drop(block);
    let after = rss_kib();
    assert!(touched >= before + 15 * 1024, "the block was never resident: {before} → {touched} KiB");
    assert!(after + 1024 >= touched, "freeing the block returned its pages: {touched} → {after} KiB");

    // The next batch's block of the same size reuses those pages instead of adding new ones.
    let again = std::hint::black_box(vec![2u8; 16 << 20]);
    assert!(rss_kib() <= touched + 1024, "the second block took new pages: {touched} → {} KiB", rss_kib());
    drop(again);
}
