#!/usr/bin/env bash
# Measures compaction on the local stack, in one run: one hour of BENCH_FILES micro-batch files
# of BENCH_ROWS events (default 200 x 500) before and after compaction — file count, bytes, the
# compaction time, and every example query's DuckDB time (median of 15) on each. Prints a
# Markdown table for bench/RESULTS.md ("Compaction").
#
#   bash athena/bench_compaction.sh
#   BENCH_FILES=400 BENCH_ROWS=250 bash athena/bench_compaction.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"
bash scripts/local-stack.sh up
bash scripts/venv.sh
# shellcheck source=/dev/null
source scripts/env.sh
cargo test -p stream-consumer --test compaction -- --ignored --exact bench_compaction --nocapture 2>&1 \
  | sed -n '/micro-batch files ×/,/^$/p; /^|/p'
