//! CPU hints for the table's hot loops: the flow module's only `unsafe`.
//!
//! Staged lookups ask for a bucket line, then an entry line, several
//! packets before they read it, so the cache misses of a whole vector
//! overlap instead of stalling one after another.
#![allow(unsafe_code)]

/// Asks the CPU to bring the cache line holding `r` into L1.
#[inline(always)]
pub(super) fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is only a hint: it never faults, never writes and
    // has no effect on program state; the address comes from a live
    // reference anyway. SSE, which the intrinsic requires, is part of the
    // x86_64 baseline, so the instruction always exists.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// Asks the kernel to back the 2 MiB-aligned part of `region` (memory not
/// yet touched) with transparent huge pages: a table of a million flows
/// spans ~140 MiB, far beyond what 4 KiB TLB entries cover, and a page
/// walk per random access would cap the lookup rate. Best effort: without
/// THP (`never`) the call fails and nothing changes.
pub(super) fn advise_hugepages<T>(region: &mut [std::mem::MaybeUninit<T>]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = region.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(region);
        let first = start.next_multiple_of(HUGE);
        let last = end / HUGE * HUGE;
        if first >= last {
            return;
        }
        // SAFETY: [first, last) lies inside `region`, memory this process
        // allocated and that only our `&mut` reaches; MADV_HUGEPAGE changes
        // how the kernel backs those pages, never their contents, address
        // or permissions.
        let r = unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            )
        };
        if r != 0 {
            tracing::debug!(
                "no transparent huge pages for the flow table: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = region;
}
