#!/usr/bin/env bash
# Caracal demo: three "pods" (network namespaces caracal-demo-a, -b, -c),
# each wired to caracal-dataplane by a tap interface, then traffic between
# them — ping, TCP and UDP over IPv4 and IPv6 — and the dataplane's view of
# it (interfaces, routes, counters).
#
# Usage: sudo scripts/demo.sh
#
# Needs root (namespaces, taps), and ip, ping and iperf3
# (scripts/install-deps.sh installs them). Everything it creates is removed
# when it exits, also on Ctrl-C or on a failure; namespaces left by an
# earlier run that was killed are removed first.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly NAMESPACES=(caracal-demo-a caracal-demo-b caracal-demo-c)
# Pod n (1, 2, 3 for a, b, c) gets 10.65.0.n/32 and fd00:65::n/128.
readonly V4_PREFIX=10.65.0.
readonly V6_PREFIX=fd00:65::
# Where the dataplane's pid is kept, so a run can stop a dataplane that an
# earlier, killed run left behind.
readonly PID_FILE=/run/caracal-demo.pid

if [[ -t 1 ]]; then
    bold=$'\033[1m' reset=$'\033[0m'
else
    bold='' reset=''
fi

header() { printf '\n%s=== %s ===%s\n' "$bold" "$*" "$reset"; }
# Prints a command, then runs it.
run() {
    printf '%s$ %s%s\n' "$bold" "$*" "$reset"
    "$@"
}
# Runs a command inside a pod's namespace, printing it the short way.
in_pod() {
    local ns=$1
    shift
    printf '%s[%s]$ %s%s\n' "$bold" "$ns" "$*" "$reset"
    ip netns exec "$ns" "$@"
}
die() {
    printf 'demo: error: %s\n' "$*" >&2
    exit 1
}

((EUID == 0)) || die "run as root (it creates network namespaces and taps): sudo $0"
for cmd in cargo ip ping iperf3 python3; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd is missing; run scripts/install-deps.sh"
done

workdir=$(mktemp -d /tmp/caracal-demo.XXXXXX)
socket=$workdir/dataplane.sock
dataplane_log=$workdir/dataplane.log
dataplane_pid=''
iperf_pid=''

# Kills whatever runs inside a namespace, then removes it.
remove_namespace() {
    local ns=$1 pids
    [[ -e "/var/run/netns/$ns" ]] || return 0
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [[ -n "$pids" ]]; then
        # shellcheck disable=SC2086 # one pid per word
        kill $pids 2>/dev/null || true
    fi
    ip netns del "$ns"
}

# Stops a dataplane with SIGTERM (it then removes its interfaces and its
# socket), waiting up to 10 s before SIGKILL.
stop_dataplane() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "demo: dataplane $pid did not stop in 10 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    header "Cleaning up"
    if ((status != 0)) && [[ -s "$dataplane_log" ]]; then
        echo "The demo did not finish (exit $status). Last lines of the dataplane's log:"
        tail -n 20 "$dataplane_log"
    fi
    if [[ -n "$iperf_pid" ]]; then
        kill "$iperf_pid" 2>/dev/null
        wait "$iperf_pid" 2>/dev/null
    fi
    if [[ -n "$dataplane_pid" ]]; then
        echo "stopping caracal-dataplane (pid $dataplane_pid)"
        stop_dataplane "$dataplane_pid"
        wait "$dataplane_pid" 2>/dev/null
        rm -f "$PID_FILE"
    fi
    for ns in "${NAMESPACES[@]}"; do
        remove_namespace "$ns"
    done
    echo "removed namespaces ${NAMESPACES[*]}"
    rm -rf "$workdir"
    exit "$status"
}
trap cleanup EXIT
# Ctrl-C and kill: exit with the conventional status; the EXIT trap cleans up.
trap 'exit 130' INT
trap 'exit 143' TERM

header "Building the release binaries"
run cargo build --release --bin caracal-dataplane --bin caracalctl --bin hugepages-setup
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target_dir/release
caracalctl() { "$bin/caracalctl" --socket "$socket" "$@"; }

header "Removing leftovers of an earlier run"
if [[ -f "$PID_FILE" ]]; then
    old_pid=$(<"$PID_FILE")
    # Only if that pid is still a dataplane (and not a reused pid).
    if [[ "$(readlink "/proc/$old_pid/exe" 2>/dev/null)" == */caracal-dataplane* ]]; then
        echo "stopping the dataplane of an earlier run (pid $old_pid)"
        stop_dataplane "$old_pid"
    fi
    rm -f "$PID_FILE"
fi
for ns in "${NAMESPACES[@]}"; do
    if [[ -e "/var/run/netns/$ns" ]]; then
        echo "removing namespace $ns"
        remove_namespace "$ns"
    fi
done

header "Reserving hugepages for the buffer pool (best effort)"
# Without them the dataplane falls back to ordinary pages, with a warning.
run "$bin/hugepages-setup" --pages 64 --best-effort ||
    echo "demo: could not set up hugepages; going on without them"

header "Starting caracal-dataplane (1 worker, adaptive mode)"
echo "API socket: $socket; log: $dataplane_log"
"$bin/caracal-dataplane" --socket "$socket" --workers 1 --mode adaptive 2>"$dataplane_log" &
dataplane_pid=$!
echo "$dataplane_pid" >"$PID_FILE"
for _ in $(seq 100); do
    kill -0 "$dataplane_pid" 2>/dev/null || die "caracal-dataplane exited during start-up"
    caracalctl show interfaces >/dev/null 2>&1 && break
    sleep 0.1
done
caracalctl show interfaces >/dev/null || die "caracal-dataplane did not answer on $socket within 10 s"
echo "caracal-dataplane is up (pid $dataplane_pid)"

header "Creating three pods: namespaces with a tap each"
n=0
for ns in "${NAMESPACES[@]}"; do
    n=$((n + 1))
    run ip netns add "$ns"
    run ip -n "$ns" link set lo up
    run caracalctl interface add tap "demo-${ns##*-}" --netns "/var/run/netns/$ns" \
        --address "${V4_PREFIX}$n/32" --address "${V6_PREFIX}$n/128" --configure
done
for ns in "${NAMESPACES[@]}"; do
    in_pod "$ns" ip -brief address show dev eth0
    in_pod "$ns" ip route show
    in_pod "$ns" ip -6 route show
done

a=${NAMESPACES[0]} b=${NAMESPACES[1]} c=${NAMESPACES[2]}

header "Ping a -> b over IPv4"
in_pod "$a" ping -c3 -W2 "${V4_PREFIX}2"

header "Ping a -> b over IPv6"
in_pod "$a" ping -6 -c3 -W2 "${V6_PREFIX}2"

header "Starting an iperf3 server in b"
# Not through in_pod: $! must be iperf3's own pid (ip netns exec execs it).
ip netns exec "$b" iperf3 --server >"$workdir/iperf3-server.log" 2>&1 &
iperf_pid=$!
for _ in $(seq 50); do
    ip netns exec "$b" ss -Hltn 'sport = :5201' | grep -q . && break
    sleep 0.1
done
ip netns exec "$b" ss -Hltn 'sport = :5201' | grep -q . || die "iperf3 server in $b did not start"

header "TCP a -> b over IPv4 (iperf3, 3 s)"
in_pod "$a" iperf3 --client "${V4_PREFIX}2" --time 3

header "TCP a -> b over IPv6 (iperf3, 3 s)"
in_pod "$a" iperf3 --client "${V6_PREFIX}2" --time 3

header "UDP c -> b over IPv4 (iperf3, 100 Mbit/s, 3 s)"
in_pod "$c" iperf3 --client "${V4_PREFIX}2" --udp --bitrate 100M --time 3

header "caracalctl show interfaces"
run caracalctl show interfaces

header "caracalctl show routes"
run caracalctl show routes

header "caracalctl show counters"
run caracalctl show counters

header "Done"
echo "Everything worked; cleaning up."
