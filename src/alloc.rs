//! The process's allocator settings for tensor work on the CPU.
//!
//! glibc's malloc serves every block above its mmap threshold (128 KiB, adapting up to 32 MiB)
//! with a fresh `mmap` and hands it back with `munmap` on free, so every encoder op that
//! allocates an activation (tens of MB at batch 32 × 128) page-faults and zeroes new memory,
//! and freed memory above the trim threshold goes back to the kernel to be faulted in again by
//! the next op. [`keep_freed_memory`] raises both thresholds so freed blocks stay in the heap
//! and are reused: element-wise ops 2–4 × faster, GEMMs ~1.3 × (see the README's speed table).
//! Peak memory is unchanged in kind — what is kept is what an earlier op of the same size
//! freed — but the process keeps its high-water mark until it exits.

/// Blocks up to this size come from the heap (reused) instead of their own mmap.
pub const MMAP_THRESHOLD: i32 = 1 << 30;
/// Free memory at the top of the heap is returned to the kernel only above this.
pub const TRIM_THRESHOLD: i32 = i32::MAX;

/// Sets glibc's `M_MMAP_THRESHOLD` / `M_TRIM_THRESHOLD` (see the module docs) unless the user
/// chose malloc settings through `GLIBC_TUNABLES` or `MALLOC_*_` variables, or set
/// `RECSYS_MALLOC_DEFAULTS=1` (glibc's defaults; benchmarks use it for the "before" figure).
/// Call once, early, before the threads start. Returns whether the settings were applied.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_chose = std::env::vars_os().any(|(k, _)| {
            let k = k.to_string_lossy();
            k == "GLIBC_TUNABLES"
                || k == "RECSYS_MALLOC_DEFAULTS"
                || (k.starts_with("MALLOC_") && k.ends_with('_'))
        });
        if user_chose {
            return false;
        }
        // SAFETY: mallopt only changes malloc's parameters; called before other threads run.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Hands memory freed by earlier work back to the kernel (`malloc_trim`), so the next stage's
/// peak resident set is its own. Cheap when little is free.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Restarts the process's peak-RSS count (`VmHWM`) from the current resident set (Linux
/// `clear_refs` 5); false where that is not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak resident set in bytes since start or the last [`reset_peak_rss`]
/// (`VmHWM` of /proc/self/status), when the system reports it.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
