//! Waiting for a condition, with a deadline.

use std::time::{Duration, Instant};

/// Polls `cond` every `every` until it holds; panics with `what` when
/// `timeout` passes first.
pub fn wait_until(what: &str, timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(every);
    }
}
