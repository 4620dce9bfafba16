//! Whether a privileged test may run. Without root it is skipped (it
//! says so and passes), unless `CARACAL_REQUIRE_PRIVILEGED=1` — set on
//! CI machines meant to run them — which makes anything missing a
//! failure, never a skip.

/// Whether `CARACAL_REQUIRE_PRIVILEGED=1`: nothing may be skipped.
pub fn require_privileged() -> bool {
    std::env::var("CARACAL_REQUIRE_PRIVILEGED").as_deref() == Ok("1")
}

/// Skips the test for `reason` ("not root", "dpdk-testpmd is not
/// installed", ...): prints `skipped: REASON`, or panics under
/// `CARACAL_REQUIRE_PRIVILEGED=1`.
pub fn skip(reason: &str) {
    assert!(
        !require_privileged(),
        "CARACAL_REQUIRE_PRIVILEGED=1 but the test cannot run: {reason}"
    );
    eprintln!("skipped: {reason}");
}

/// True when the test runs as root (effective uid 0); otherwise false
/// after [`skip`] (a failure under `CARACAL_REQUIRE_PRIVILEGED=1`).
pub fn privileged() -> bool {
    if effective_uid_is_root() {
        return true;
    }
    skip("not root");
    false
}

/// The effective uid from `/proc/self/status` (`Uid: real effective
/// saved fs`): no libc call, so no unsafe.
fn effective_uid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|ids| ids.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
