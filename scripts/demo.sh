#!/usr/bin/env bash
# Caracal demo: a whole single-node cluster on this machine.
#
#   1. installs what it needs and builds the release binaries;
#   2. `caracalctl lab up examples/demo`: the real dataplane and agent, and six
#      pods in two namespaces (network namespaces <namespace>_<pod>), each
#      wired by the real CNI plugin with a tap, dual-stack;
#   3. `caracalctl lab probe`: the connectivity matrix (ICMP, IPv4 + IPv6);
#   4. a TCP transfer with iperf3 between two pods, and the dataplane's view
#      of it (interfaces, counters).
#
# The lab stays up for you to explore; `sudo target/release/caracalctl lab
# down` removes everything (the next run of this script does that first).
#
# Usage: sudo scripts/demo.sh [MANIFEST_DIR]   (default examples/demo)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
manifests=${1:-examples/demo}

if ((EUID != 0)); then
    echo "demo.sh: run as root (network namespaces, taps)" >&2
    exit 1
fi

if [[ -t 1 ]]; then bold=$'\033[1m' reset=$'\033[0m'; else bold='' reset=''; fi
header() { printf '\n%s=== %s ===%s\n' "$bold" "$*" "$reset"; }
run() {
    printf '%s$ %s%s\n' "$bold" "$*" "$reset"
    "$@"
}

header "Installing dependencies and building"
scripts/install-deps.sh
cargo build --release --workspace
ctl=target/release/caracalctl
lab_dir=${CARACAL_LAB_DIR:-/run/caracal-lab}
export CARACAL_DATAPLANE_SOCKET=$lab_dir/dataplane.sock

header "Bringing the lab up from $manifests"
run "$ctl" lab down >/dev/null
run "$ctl" lab up "$manifests"

header "Pods"
run "$ctl" lab status

header "Connectivity matrix"
run "$ctl" lab probe

header "TCP through the dataplane: iperf3 frontend/client -> backend/db, 3 s"
db_ip=$("$ctl" lab status --json | python3 -c 'import json,sys; print([p for p in json.load(sys.stdin)["pods"] if p["name"]=="db"][0]["ips"][0])')
ip netns exec backend_db iperf3 -s -1 -D --logfile /dev/null
sleep 0.5
run ip netns exec frontend_client iperf3 -c "$db_ip" -t 3 -f g | tail -n 4

header "The dataplane's view"
run "$ctl" show interfaces
run "$ctl" show counters

header "Done"
echo "The lab is still up. Explore with, for example:"
echo "  sudo ip netns exec frontend_web-1 ping $db_ip"
echo "  sudo $ctl lab status --json"
echo "Remove it with: sudo $ctl lab down"
