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
