#!/usr/bin/env bash
# The kernel mix benchmark on the real kernel: a 32 B RPC every 10 ms beside 4 MiB
# responses on the same connection, our stack against one plain TCP connection with
# TCP_NOTSENT_LOWAT 16 KiB (benches/src/kernel_mix.rs says what each side does).
#
# Two network namespaces joined by a veth pair, shaped in both directions with tbf to
# each rate in turn; the server runs in one namespace, the client in the other. For each
# rate it runs: plain bulk alone (4 responses in flight, no small RPC: the link's goodput
# ceiling), the small RPC alone (both implementations: the idle latency), then the mix
# with K = 1 and 4 bulk responses in flight, plain and stack (the stack at its default
# TCP_NOTSENT_LOWAT and at each further value of --stack-lowat). It prints a table;
# the raw result lines go to --out (default target/kernel-mix.txt).
#
#   sudo ./scripts/kernel-mix.sh                           # ~10 minutes
#   sudo ./scripts/kernel-mix.sh --duration 5 --rates 100mbit --stack-lowat ""
#   sudo ./scripts/kernel-mix.sh --ss ss.log               # also sample `ss -tmi` on the server
#   sudo ./scripts/kernel-mix.sh --ss ss.log --ss-interval 0.02   # ... every 20 ms
#
# Needs root (ip netns, tc). Everything it creates is removed on exit, and leftovers of
# an interrupted run are removed before it starts. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=20
warmup=2
rates="100mbit 1gbit"
stack_lowat="16384"
out="${CARGO_TARGET_DIR:-target}/kernel-mix.txt"
ss_log=""
ss_interval=0.5
usage="usage: $0 [--duration S] [--warmup S] [--rates \"100mbit 1gbit\"] [--stack-lowat \"BYTES ...\"] [--out FILE] [--ss FILE] [--ss-interval S]"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) duration="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --rates) rates="$2"; shift 2 ;;
        --stack-lowat) stack_lowat="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --ss) ss_log="$2"; shift 2 ;;
        --ss-interval) ss_interval="$2"; shift 2 ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
if [[ $EUID -ne 0 ]]; then
    echo "needs root (network namespaces and tc)" >&2
    exit 2
fi

NS_SERVER=kmix-server
NS_CLIENT=kmix-client
DEV_SERVER=kmix-s
DEV_CLIENT=kmix-c
ADDR_SERVER=10.231.0.1
ADDR_CLIENT=10.231.0.2
PORT=7411
server_pid=""
sampler_pid=""
client_pid=""
line_file=""

# Stops the processes of the current run, if any.
stop_run() {
    for pid in $client_pid $sampler_pid $server_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    client_pid=""
    server_pid=""
    sampler_pid=""
}

teardown() {
    stop_run
    [[ -n "$line_file" ]] && rm -f "$line_file"
    # Deleting a namespace kills its end of the veth pair, and with it the other end.
    ip netns del "$NS_SERVER" 2>/dev/null || true
    ip netns del "$NS_CLIENT" 2>/dev/null || true
}
trap teardown EXIT
trap 'exit 130' INT TERM
teardown
line_file=$(mktemp)

cargo build --release -p benches --bin kernel_mix
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release/kernel_mix"

ip netns add "$NS_SERVER"
ip netns add "$NS_CLIENT"
ip link add "$DEV_SERVER" netns "$NS_SERVER" type veth peer name "$DEV_CLIENT" netns "$NS_CLIENT"
ip -n "$NS_SERVER" addr add "$ADDR_SERVER/24" dev "$DEV_SERVER"
ip -n "$NS_CLIENT" addr add "$ADDR_CLIENT/24" dev "$DEV_CLIENT"
for ns in "$NS_SERVER" "$NS_CLIENT"; do
    ip -n "$ns" link set lo up
done
ip -n "$NS_SERVER" link set "$DEV_SERVER" up
ip -n "$NS_CLIENT" link set "$DEV_CLIENT" up

# Shapes both directions to $1. tbf's parameters:
# - burst: the bytes the shaper may send at once at the veth's own speed, about 2.5 ms
#   of the rate (32 KB at 100 Mbit/s, 256 KB at 1 Gbit/s). It must exceed one MTU, and
#   be large enough that the shaper's timer (hrtimers, but in a VM) does not hold the
#   rate below the one asked; small against the 10 ms between small RPCs.
# - latency 20 ms: the longest a packet may wait in the shaper's queue, which sets its
#   size (rate x latency + burst: 280 KB at 100 Mbit/s, 2.7 MB at 1 Gbit/s); past it
#   packets are dropped, as by a router's buffer. With BBR (this machine's congestion
#   control; the script prints it) the standing queue is set by the sender, not by this
#   limit: about 55-65 KB at 100 Mbit/s with either implementation. A 5 ms limit
#   dropped packets during BBR's start-up and probing, and the loss recovery that
#   followed (the retransmission timeout is about 200 ms here) made the tails of both
#   sides (single runs had p99 of 147 ms for plain and 234 ms for the stack); with
#   20 ms, `ss -ti` showed few or no retransmissions after start-up. With a loss-based
#   congestion control (cubic) the queue would fill to the limit and add up to 20 ms
#   to every small RPC of both implementations.
shape() {
    local rate="$1" burst
    case "$rate" in
        100mbit) burst=32kb ;;
        1gbit) burst=256kb ;;
        *) echo "no burst chosen for rate $rate" >&2; exit 2 ;;
    esac
    ip netns exec "$NS_SERVER" tc qdisc replace dev "$DEV_SERVER" root tbf rate "$rate" burst "$burst" latency 20ms
    ip netns exec "$NS_CLIENT" tc qdisc replace dev "$DEV_CLIENT" root tbf rate "$rate" burst "$burst" latency 20ms
}

wait_listening() {
    for _ in $(seq 100); do
        if ip netns exec "$NS_SERVER" ss -Hltn "sport = :$PORT" | grep -q .; then
            return 0
        fi
        sleep 0.05
    done
    echo "the server did not listen" >&2
    exit 1
}

# Samples the server's and then the client's sockets every --ss-interval seconds
# while the client runs.
sample_ss() {
    while true; do
        echo "--- $(date +%T.%N) $*"
        ip netns exec "$NS_SERVER" ss -tmi "sport = :$PORT"
        echo "client:"
        ip netns exec "$NS_CLIENT" ss -tmi "dport = :$PORT"
        sleep "$ss_interval"
    done >> "$ss_log"
}

# run RATE IMPL LOWAT(default|BYTES) CLIENT-FLAGS...: one server, one client, one line.
run() {
    local rate="$1" impl="$2" lowat="$3"
    shift 3
    local lowat_flag=()
    [[ "$lowat" != default ]] && lowat_flag=(--lowat "$lowat")
    ip netns exec "$NS_SERVER" "$bin" server --impl "$impl" --addr "$ADDR_SERVER:$PORT" "${lowat_flag[@]}" &
    server_pid=$!
    wait_listening
    if [[ -n "$ss_log" ]]; then
        sample_ss "rate=$rate impl=$impl lowat=$lowat $*" &
        sampler_pid=$!
    fi
    # In the background, so that a signal to this script is handled at once.
    ip netns exec "$NS_CLIENT" "$bin" client --impl "$impl" --addr "$ADDR_SERVER:$PORT" \
        --warmup "$warmup" --duration "$duration" "${lowat_flag[@]}" "$@" > "$line_file" &
    client_pid=$!
    wait "$client_pid"
    client_pid=""
    stop_run
    echo "rate=$rate $(cat "$line_file")" | tee -a "$out"
}

: > "$out"
[[ -n "$ss_log" ]] && : > "$ss_log"
echo "congestion control: $(ip netns exec "$NS_SERVER" sysctl -n net.ipv4.tcp_congestion_control)"
for rate in $rates; do
    shape "$rate"
    run "$rate" plain default --in-flight 4 --no-small
    run "$rate" plain default --in-flight 0
    run "$rate" stack default --in-flight 0
    for k in 1 4; do
        run "$rate" plain default --in-flight "$k"
        run "$rate" stack default --in-flight "$k"
        for lowat in $stack_lowat; do
            run "$rate" stack "$lowat" --in-flight "$k"
        done
    done
done

python3 - "$out" <<'PY'
import sys
rows = [dict(f.split("=", 1) for f in line.split()) for line in open(sys.argv[1]) if line.strip()]
ceiling = {r["rate"]: r["goodput_mbit"] for r in rows if r["small"] == "off"}
plain = {(r["rate"], r["k"]): r for r in rows if r["impl"] == "plain" and r["small"] == "on"}
def ratio(a, b):
    try:
        return f"{float(a) / float(b):.2f}x"
    except (ValueError, ZeroDivisionError):
        return ""
print()
print("| rate | impl | NOTSENT_LOWAT | bulk in flight | small RPCs | p50 ms | p99 ms | max ms "
      "| goodput Mbit/s | p50 / plain | p99 / plain | goodput / ceiling |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    base = plain.get((r["rate"], r["k"]))
    small = r["small"] == "on"
    cells = [r["rate"], r["impl"], r["lowat"], r["k"],
             f'{r["rpcs"]} ({r["lost"]} lost)' if small else "none",
             r["p50_ms"], r["p99_ms"], r["max_ms"],
             r["goodput_mbit"] if r["k"] != "0" else "",
             ratio(r["p50_ms"], base["p50_ms"]) if base and small and r["impl"] != "plain" else "",
             ratio(r["p99_ms"], base["p99_ms"]) if base and small and r["impl"] != "plain" else "",
             ratio(r["goodput_mbit"], ceiling.get(r["rate"], "-")) if r["k"] != "0" else ""]
    print("| " + " | ".join(cells) + " |")
print()
print("ceiling: plain TCP alone, 4 responses in flight, no small RPC (the small-off row)")
PY
