//! The generator's clock: `CLOCK_MONOTONIC` in nanoseconds, read through
//! the vDSO (no system call). TX timestamps and the sink's arrival times
//! use it, so a sink in another process on the same host agrees.

use rustix::time::{clock_gettime, ClockId};

/// `CLOCK_MONOTONIC` now, nanoseconds.
#[inline]
pub fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_moves_forward() {
        let a = super::now_ns();
        let b = super::now_ns();
        assert!(a > 0 && b >= a);
    }
}
