//! Allocator settings for a process that handles one large batch after another.
//!
//! A 10,000-record batch allocates some 40 MB (the records, the decoded events, the Arrow
//! columns, the Parquet writer's pages) and frees it all when the batch is written. glibc's
//! defaults hand such memory back to the kernel: blocks from 128 KiB up are separate mappings,
//! and free space over 128 KiB at the top of the heap is trimmed. The next batch then faults
//! every page in again and the kernel zeroes each one — in a Firecracker VM such as Lambda's,
//! about a fifth of the CPU path's time (`bench/RESULTS.md`). Keeping the freed memory in the
//! process for the next batch costs nothing a Lambda is billed for (its memory is reserved
//! whether used or not) and does not raise the peak, which one batch sets.

/// Allocations below this size come from the heap, where freed memory is reused, rather than
/// from a mapping of their own that `free` unmaps. 32 MiB is glibc's largest allowed value on
/// 64-bit systems; a batch's largest block (its Parquet file, its record buffer) is a few MB.
pub const MMAP_THRESHOLD_BYTES: usize = 32 << 20;

/// Free memory at the top of the heap is returned to the kernel only beyond this size: above a
/// whole batch's working set, so what one batch frees the next one reuses.
pub const TRIM_THRESHOLD_BYTES: usize = 64 << 20;

/// Keeps memory freed by one batch in the process for the next (see the module docs). Call it
/// once at start-up, before the first batch. Returns whether the allocator took the settings:
/// `false` off glibc (musl, macOS), where the defaults stay.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn keep_freed_memory() -> bool {
    // SAFETY: mallopt only changes glibc's allocator parameters, under the allocator's own
    // lock; it touches no memory of ours and any thread may call it at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES as libc::c_int) == 1
    }
}

/// Off glibc there is no `mallopt`: the allocator's defaults stay.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() -> bool {
    false
}
