#!/usr/bin/env bash
# Builds the comparison suite (its own workspace: rust-libp2p stays out of the main
# build) and runs it, writing the table into benches/README.md. Extra arguments go to the
# suite: --runs N (default 3), --quick (small sizes, a smoke run), --only WORKLOAD (with --ours-only, our side alone: for profiling).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release
exec ./target/release/compare --out ../README.md "$@"
