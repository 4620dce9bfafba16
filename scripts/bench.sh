#!/usr/bin/env bash
# The one benchmark command: every side-by-side comparison of
# perf/src/harness in one run, results (JSON, markdown, SVG plots) in
# perf/results/ unless --out says otherwise.
#
#   sudo ./scripts/bench.sh              # the full run (~10 minutes on 2 cores after the build)
#   sudo ./scripts/bench.sh --quick      # the short mode CI runs (< 2 minutes)
#   sudo ./scripts/bench.sh --scenarios classifier,lpm
#
# Extra arguments go to caracal-bench (see `caracal-bench --help`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ((EUID != 0)); then
    echo "bench.sh: run as root (network namespaces, memif sockets, nftables, hugepages)" >&2
    exit 1
fi

scripts/install-deps.sh
cargo run --release --quiet -p hugepages-setup -- --pages 64 --best-effort
cargo build --release --workspace
exec target/release/caracal-bench "$@"
