#!/usr/bin/env bash
# `make bench`: criterion benchmarks of the two CPU paths, the consumer's peak memory for a
# full batch, and two k6 loads through the local pipeline (release builds), each reconciled by
# the verifier: a sustained one (~5,000 events/s for 2 minutes) for throughput and requests per
# 1,000 events, then ~1,000 events/s for 1 minute for end-to-end latency. The figures go to
# bench/RESULTS.md (section "Measured").
#
#   BENCH_RATE=requests/s (default 380, ~5,000 events/s)  BENCH_DURATION (default 2m)
#   BENCH_LATENCY_RATE=requests/s (default 75, ~1,000 events/s)  BENCH_LATENCY_DURATION (default 1m)
#   BENCH_SKIP_CRITERION=1 reuses the criterion outputs already in bench/out
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=lib.sh
source "$root/scripts/lib.sh"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"
out=bench/out
mkdir -p "$out"

if [ "${BENCH_SKIP_CRITERION:-0}" != 1 ]; then
  echo "==> criterion"
  cargo bench -q -p producer-api --bench request_path -- --noplot 2>&1 | tee "$out/criterion-producer.txt"
  cargo bench -q -p stream-consumer --bench cpu_path -- --noplot 2>&1 | tee "$out/criterion-consumer.txt"
  echo "==> peak memory, one 10,000-record batch"
  cargo run -q --release -p stream-consumer --example batch_memory | tee "$out/batch-memory.txt"
fi

echo "==> sustained load through the pipeline (release binaries)"
cargo_step "release build of the pipeline and the verifier" build --release --workspace --bins
bash scripts/local-stack.sh up
bash scripts/pipeline.sh down
PIPELINE_SCHEDULE=0 PIPELINE_PROFILE=release bash scripts/pipeline.sh up
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

echo "==> end-to-end latency at ~1,000 events/s"
mkdir -p "$out/latency"
snapshot "$out/latency/metrics-before"
latency_k6_status=0
PRE_VUS=100 MAX_VUS=400 RATE="${BENCH_LATENCY_RATE:-75}" DURATION="${BENCH_LATENCY_DURATION:-1m}" \
  SUMMARY_DIR="$out/latency" ACK_LOG_FILE="$out/latency/acks.ndjson" \
  bash scripts/k6.sh run --quiet loadtest/k6/sustained.js || latency_k6_status=$?
latency_verify_status=0
"$CARGO_TARGET_DIR/release/verify" --wait 120 "$out/latency/acks.ndjson" | tee "$out/latency/verify.txt" \
  || latency_verify_status=$?
snapshot "$out/latency/metrics-after"
# Back to the default (debug) binaries, which the tests use.
bash scripts/pipeline.sh down
bash scripts/pipeline.sh up

.local/venv/bin/python scripts/bench_report.py --out "$out" --k6-status "$k6_status" --verify-status "$verify_status" \
  --latency-k6-status "$latency_k6_status" --latency-verify-status "$latency_verify_status"
echo "bench: wrote bench/RESULTS.md"
[ "$k6_status" -eq 0 ] && [ "$verify_status" -eq 0 ] && [ "$latency_k6_status" -eq 0 ] && [ "$latency_verify_status" -eq 0 ]
