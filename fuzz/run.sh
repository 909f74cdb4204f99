#!/usr/bin/env bash
# Runs every fuzz target for the given number of seconds each (default 60), one after
# another, and prints the executions per target. Installs cargo-fuzz if missing.
#
#   fuzz/run.sh [seconds-per-target] [target...]
#
# Without target names it runs them all. Runs on stable Rust without sanitizers
# (`-s none`); for an AddressSanitizer run on nightly set FUZZ_SANITIZER=address.
# New inputs the fuzzer finds go to fuzz/corpus-found/<target>/ (not committed), crashes
# to fuzz/targets/artifacts/<target>/. Logs are in fuzz/logs/<target>.log.
set -euo pipefail

seconds="${1:-60}"
shift || true
cd "$(dirname "$0")"
# The cargo-fuzz project is fuzz/targets; corpora and results stay in fuzz/.
fuzz=(--fuzz-dir targets)

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

sanitizer="${FUZZ_SANITIZER:-none}"
# cargo-fuzz passes `-Z` flags to rustc; RUSTC_BOOTSTRAP lets a stable toolchain accept them.
export RUSTC_BOOTSTRAP=1

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list "${fuzz[@]}")
fi

cargo fuzz build "${fuzz[@]}" -s "$sanitizer"

mkdir -p logs
status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus-found/$target"
    log="logs/$target.log"
    # -rss_limit_mb: a leak or an allocation past the limits fails the run.
    # -timeout: one input taking longer than this is a hang.
    if cargo fuzz run "${fuzz[@]}" -s "$sanitizer" "$target" "corpus-found/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1; then
        result="ok"
    else
        result="FAILED (see fuzz/$log and fuzz/targets/artifacts/$target/)"
        status=1
    fi
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1 || true)
    rate=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}' | tail -1 || true)
    printf '%-20s %10s executions in %ss (%s/s) %s\n' "$target" "${execs:-?}" "$seconds" "${rate:-?}" "$result"
done
exit "$status"
