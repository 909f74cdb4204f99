#!/usr/bin/env bash
# Runs the demo cluster (four validators in one process, loopback TCP) for a while and
# samples, every interval, the process's resident memory, its open files and the
# validators' committed heights; then reports how resident memory moved after the
# warm-up. Not part of the default test suite.
#
#   ./scripts/soak.sh                       # 30 minutes, a sample every 10 s
#   ./scripts/soak.sh --minutes 10 --interval 5 --out soak.csv
#
# It exits non-zero when the resident memory after the warm-up (the first 5 minutes, or a
# sixth of a shorter run) leaves a band of +-10% around its value at the end of the warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=30
interval=10
out=soak.csv
metrics=127.0.0.1:9187
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --interval) interval="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --metrics-address) metrics="$2"; shift 2 ;;
        *) echo "usage: $0 [--minutes N] [--interval S] [--out FILE] [--metrics-address HOST:PORT]" >&2; exit 2 ;;
    esac
done

cargo build --release -p node
if curl -s -o /dev/null "http://$metrics/metrics"; then
    echo "something already serves http://$metrics: stop it or pass --metrics-address" >&2
    exit 2
fi
seconds=$((minutes * 60))
./target/release/node demo --duration "${seconds}s" --metrics-address "$metrics" > "$out.demo.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT

echo "elapsed_s,rss_kib,open_files,min_height,max_height" > "$out"
start=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
    sleep "$interval"
    now=$(date +%s)
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo "")
    [[ -z "$rss" ]] && break
    files=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
    heights=$(curl -s "http://$metrics/metrics" | awk '/^consensus_committed_height/ {print $2}' | sort -n)
    min_h=$(echo "$heights" | head -1)
    max_h=$(echo "$heights" | tail -1)
    echo "$((now - start)),$rss,$files,${min_h:-0},${max_h:-0}" | tee -a "$out"
done
wait "$pid" || true

warmup=300
if (( seconds < 1800 )); then warmup=$((seconds / 6)); fi
python3 - "$out" "$warmup" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]))]
warmup = int(sys.argv[2])
after = [r for r in rows if int(r["elapsed_s"]) >= warmup]
if not after:
    sys.exit("no samples after the warm-up")
base = int(after[0]["rss_kib"])
rss = [int(r["rss_kib"]) for r in after]
lo, hi = min(rss), max(rss)
print(f"samples: {len(rows)}; after {warmup} s: RSS {base / 1024:.1f} MiB at first, "
      f"{lo / 1024:.1f}-{hi / 1024:.1f} MiB in all ({(lo / base - 1) * 100:+.1f}% .. "
      f"{(hi / base - 1) * 100:+.1f}%); last {rss[-1] / 1024:.1f} MiB; "
      f"open files {after[0]['open_files']} -> {after[-1]['open_files']}; "
      f"heights {after[0]['min_height']} -> {after[-1]['min_height']}")
sys.exit(0 if lo >= 0.9 * base and hi <= 1.1 * base else 1)
PY
