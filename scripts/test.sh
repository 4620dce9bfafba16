#!/usr/bin/env bash
# The one test command: everything CI checks, in the order it checks it.
#
#   install-deps → hugepages (best effort) → rustfmt → clippy →
#   release build → benchmark harness and criterion benches in quick
#   mode → every test, privileged ones included
#
# Run as root: the privileged tests (network namespaces, taps, hugepages)
# fail rather than skip here (CARACAL_REQUIRE_PRIVILEGED=1). A developer
# without root can run the rest with CARACAL_REQUIRE_PRIVILEGED=0.
#
# Tests build in the dev profile, not --release: the release profile's fat
# LTO with one codegen unit is paid again for every test binary, and
# panic=abort makes cargo build the whole dependency graph a second time
# (tests need unwinding). Measured on 2 cores: ~25 s per tonic-sized test
# binary in release against ~1 s in dev. Dev tests also keep overflow
# checks and debug assertions on. The release binaries are still built
# (and are what the demo runs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARACAL_REQUIRE_PRIVILEGED="${CARACAL_REQUIRE_PRIVILEGED:-1}"
# One-shot builds gain nothing from incremental state, and it is the
# largest thing in target/ (several GiB for this workspace's tests).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

started=$SECONDS
current_step=''
step_started=$SECONDS
# Prints a header for the next step, and how long the previous one took.
step() {
    if [[ -n "$current_step" ]]; then
        printf '    %s: %ds\n' "$current_step" $((SECONDS - step_started))
    fi
    current_step=$*
    step_started=$SECONDS
    printf '\n==> %s\n' "$*"
}
report_failure() {
    local status=$?
    if ((status != 0)) && [[ -n "$current_step" ]]; then
        printf '\ntest.sh: FAILED (exit %d) at: %s\n' "$status" "$current_step" >&2
        report_disk >&2
    fi
}
trap report_failure EXIT

# Free space (MiB) on the file system that holds target/.
free_mib() {
    mkdir -p target
    df -Pm target | awk 'NR == 2 { print $4 }'
}
report_disk() {
    printf '    disk: target/ %s, %s MiB free\n' "$(du -sh target 2>/dev/null | cut -f1)" "$(free_mib)"
}

if ((EUID != 0)) && [[ "$CARACAL_REQUIRE_PRIVILEGED" == 1 ]]; then
    echo "test.sh: error: run as root; the privileged tests (netns, tap, hugepages) must not be skipped." >&2
    echo "test.sh: to run only the unprivileged tests: CARACAL_REQUIRE_PRIVILEGED=0 $0" >&2
    exit 1
fi

step "Installing dependencies"
scripts/install-deps.sh

step "Reserving hugepages (best effort)"
if ((EUID == 0)); then
    # 64 pages of the default size (2M: 128 MiB). Counts are never lowered,
    # and a kernel that grants fewer is reported but does not fail the run.
    cargo run --release --quiet -p hugepages-setup -- --pages 64 --best-effort
else
    echo "skipped: not root"
fi

step "Checking formatting (cargo fmt)"
cargo fmt --all -- --check

step "Linting (cargo clippy)"
cargo clippy --workspace --all-targets -- -D warnings
report_disk

step "Building release binaries"
cargo build --release --workspace
report_disk

step "Benchmark harness, quick mode (caracal-bench --quick)"
# Proves every side-by-side scenario runs end to end (a scenario that
# cannot run fails it); the figures of this short mode are not for quoting
# and go to a scratch folder, not perf/results/.
if ((EUID == 0)); then
    bench_out=$(mktemp -d)
    target/release/caracal-bench --quick --out "$bench_out"
    rm -rf "$bench_out"
else
    echo "skipped: not root (CARACAL_REQUIRE_PRIVILEGED=0)"
fi
report_disk

# On a machine short of disk, the release build's intermediates (rlibs,
# build-script output; ~2 GiB) make room for the test build. The release
# binaries themselves stay. A later run rebuilds them, so this only
# happens when space is short.
if (($(free_mib) < 8192)); then
    echo "less than 8 GiB free: removing release intermediates (the binaries stay)"
    rm -rf target/release/deps target/release/build target/release/.fingerprint target/release/incremental
    report_disk
fi

step "Criterion benches, quick mode (dev profile, no timing asserted)"
# The hot-node benches run once each in criterion's --quick mode, built in
# the dev profile the tests share (the bench profile would rebuild the
# whole dependency graph with unwinding): this checks they run, not speed.
CARACAL_BENCH_QUICK=1 cargo bench --profile dev -p caracal-perf \
    --bench graph --bench flows --bench classify --bench peers -- --quick

step "Running tests (CARACAL_REQUIRE_PRIVILEGED=$CARACAL_REQUIRE_PRIVILEGED)"
test_log=$(mktemp)
cargo test --workspace --no-fail-fast 2>&1 | tee "$test_log"
# One closing line over every test binary (cargo prints one per binary,
# and the last ones are doc-test runs that hold no tests).
totals=$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed", p, f }' "$test_log")
rm -f "$test_log"

report_disk

step "All checks passed"
elapsed=$((SECONDS - started))
printf '    total: %dm%02ds\n' $((elapsed / 60)) $((elapsed % 60))
printf 'tests: %s\n' "$totals"
