#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages that Caracal's build, tests and demo
# need, and checks for the Rust toolchain. Idempotent: when every package is
# already installed it does not touch apt at all, so repeat runs are fast.
#
# Usage: scripts/install-deps.sh     (as root, or through sudo when available)
set -euo pipefail

# Package, and why Caracal needs it.
PACKAGES=(
    iproute2       # ip netns / ip link / ip addr: the lab, the demo, tap tests
    iputils-ping   # ping: connectivity checks
    iperf3         # TCP/UDP throughput in the demo and perf comparisons
    tshark         # reading pcap captures of ports in tests
    nftables       # kernel-dataplane baseline in perf comparisons
    netcat-openbsd # nc: quick TCP/UDP probes
    dpdk           # the DPDK runtime
    dpdk-dev       # dpdk-testpmd: a memif / virtio-user peer for tests (its memif PMD comes with libdpdk-dev)
    libdpdk-dev    # headers and pkg-config files for dataplane/dpdk-sys (feature dpdk)
    libclang-dev   # bindgen, for dataplane/dpdk-sys
    pkg-config     # locating libdpdk
    python3        # helper scripts
    containernetworking-plugins # the bridge + host-local CNI plugins: the CNI ADD latency peer in perf
)

log() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

missing=()
for package in "${PACKAGES[@]}"; do
    status=$(dpkg-query --show --showformat='${Status}' "$package" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$package")
    fi
done

if ((${#missing[@]} == 0)); then
    log "all ${#PACKAGES[@]} packages are installed"
else
    log "installing: ${missing[*]}"
    if ((EUID == 0)); then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        die "installing packages needs root, and sudo is not available; run this script as root"
    fi
    # tshark asks whether non-root users may capture; answer no, without a
    # prompt. debconf-set-selections is in debconf, which apt itself needs.
    echo "wireshark-common wireshark-common/install-setuid boolean false" |
        "${as_root[@]}" debconf-set-selections
    # Wait for another apt/dpkg run (unattended upgrades, a parallel job)
    # instead of failing on its lock.
    apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600)
    "${apt[@]}" update
    "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
fi

# The Rust toolchain cannot be fetched here (no rustup download); say so
# plainly instead of failing later in the middle of a build.
if ! command -v cargo >/dev/null 2>&1; then
    die "cargo is not on PATH. Install a Rust toolchain (the rust-version in Cargo.toml or newer) with rustup, then open a new shell or run: source ~/.cargo/env"
fi
for component in fmt clippy; do
    if ! cargo "$component" --version >/dev/null 2>&1; then
        die "'cargo $component' is missing; install it with: rustup component add ${component/fmt/rustfmt}"
    fi
done
log "$(cargo --version)"
