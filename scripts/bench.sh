#!/usr/bin/env bash
# `make bench`: criterion benchmarks of the two CPU paths, the consumer's peak memory for a
# full batch, and a sustained k6 load through the local pipeline (release builds), reconciled
# by the verifier; the figures go to bench/RESULTS.md (section "Measured").
#
#   BENCH_RATE=requests/s (default 380, ~5,000 events/s)  BENCH_DURATION (default 2m)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"
out=bench/out
mkdir -p "$out"

echo "==> criterion"
cargo bench -q -p producer-api --bench request_path -- --noplot 2>&1 | tee "$out/criterion-producer.txt"
cargo bench -q -p stream-consumer --bench cpu_path -- --noplot 2>&1 | tee "$out/criterion-consumer.txt"
echo "==> peak memory, one 10,000-record batch"
cargo run -q --release -p stream-consumer --example batch_memory | tee "$out/batch-memory.txt"

echo "==> sustained load through the pipeline (release binaries)"
cargo build -q --release -p producer-api -p stream-consumer -p loadtest --bins
bash scripts/local-stack.sh up
bash scripts/pipeline.sh down
PIPELINE_PROFILE=release bash scripts/pipeline.sh up
# shellcheck source=/dev/null
source scripts/env.sh
snapshot() { curl -fsS http://127.0.0.1:9101/metrics >"$1.producer"; curl -fsS http://127.0.0.1:9102/metrics >"$1.consumer"; }
snapshot "$out/metrics-before"
k6_status=0
PRE_VUS="${BENCH_PRE_VUS:-400}" MAX_VUS=1000 RATE="${BENCH_RATE:-380}" DURATION="${BENCH_DURATION:-2m}" \
  SUMMARY_DIR="$out" ACK_LOG_FILE="$out/bench-acks.ndjson" K6_REPORT=1 \
  bash scripts/k6.sh run --quiet loadtest/k6/sustained.js || k6_status=$?
verify_status=0
"$CARGO_TARGET_DIR/release/verify" --wait 300 "$out/bench-acks.ndjson" | tee "$out/bench-verify.txt" || verify_status=$?
snapshot "$out/metrics-after"
# Back to the default (debug) binaries, which the tests use.
bash scripts/pipeline.sh down
bash scripts/pipeline.sh up

.local/venv/bin/python scripts/bench_report.py --out "$out" --k6-status "$k6_status" --verify-status "$verify_status"
echo "bench: wrote bench/RESULTS.md"
