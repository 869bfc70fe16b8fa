#!/usr/bin/env bash
# `make bench-sustained` (issue #21): an open-model load through the release build of the whole
# local stack, measured end to end, with a PASS/FAIL per criterion:
#
#   * every accepted event lands (the verifier reconciles the k6 ack log with every store);
#   * end-to-end p99 <= E2E_P99_S (5 s), from the consumer's latency histogram over the run;
#   * consumer_millis_behind_latest never above MAX_LAG_MS (5000) after WARMUP_S (30 s) of load,
#     sampled every second from the consumer runner's /metrics;
#   * everything landed within DRAIN_S (5 s) of the load's end;
#
# plus the machine's CPU per landed event and its breakdown per process (proc_breakdown.py).
# Not in CI and not in `make test`: the default load is 10 minutes of 5,000 events/s.
#
#   RATE=requests/s (100)  EVENTS_PER_REQUEST (50)  DURATION (10m)      the k6 scenario
#   SUSTAINED_PROFILE=release|debug (release)   SUSTAINED_SKIP_BUILD=1 runs the binaries built
#   SUSTAINED_OUT=dir (bench/out/sustained/<UTC time>)
#   SUSTAINED_FRESH=1 stops this checkout's emulators first, so the run starts on empty stores
#   (and an emptied database); the default reuses a running stack as `make bench` does
#
#   make bench-sustained
#   RATE=20 DURATION=60s bash scripts/bench-sustained.sh        # a short check of the harness
#
# Writes to $SUSTAINED_OUT: summary.md (the verdict), proc/ (breakdown.md, breakdown.svg, raw
# samples), lag.tsv, acks.ndjson, verify.txt, metrics-{before,after}.{producer,consumer}, k6's
# sustained-open-summary.json. Leaves the local stack up and the pipeline stopped.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=lib.sh
source "$root/scripts/lib.sh"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"
export RATE="${RATE:-100}" EVENTS_PER_REQUEST="${EVENTS_PER_REQUEST:-50}" DURATION="${DURATION:-10m}"
profile="${SUSTAINED_PROFILE:-release}"
out="${SUSTAINED_OUT:-bench/out/sustained/$(date -u +%Y%m%dT%H%M%SZ)}"
py="$root/.local/venv/bin/python"
mkdir -p "$out"
log() { printf 'bench-sustained: %s\n' "$*"; }
now() { date +%s.%N; }

if [ "${SUSTAINED_SKIP_BUILD:-0}" != 1 ]; then
  flag=()
  [ "$profile" = release ] && flag=(--release)
  # --workspace, as every build here: `-p` resolves features differently and rebuilds deps.
  cargo_step "$profile build of the pipeline and the verifier" build "${flag[@]}" --workspace --bins
fi
bin="$CARGO_TARGET_DIR/$profile"
for b in producer-api stream-consumer verify; do
  [ -x "$bin/$b" ] || { log "no $bin/$b: build it first (or drop SUSTAINED_SKIP_BUILD)"; exit 1; }
done

bash scripts/pipeline.sh down
[ "${SUSTAINED_FRESH:-0}" = 1 ] && bash scripts/local-stack.sh down
# The consumer applies the migrations when it starts: the stack's own migrate step would run
# (or build) the debug binary, which this run does not need.
SKIP_MIGRATIONS=1 bash scripts/local-stack.sh up
PIPELINE_SCHEDULE=0 PIPELINE_PROFILE="$profile" PIPELINE_SKIP_BUILD=1 bash scripts/pipeline.sh up
# shellcheck source=/dev/null
source scripts/env.sh

snapshot() { curl -fsS http://127.0.0.1:9101/metrics >"$1.producer"; curl -fsS http://127.0.0.1:9102/metrics >"$1.consumer"; }

# Whatever happens, the samplers stop and the pipeline's release binaries go (the tests use
# the debug ones; `make up` starts them again).
sampler_pid="" recorder_pid_file="$out/proc.pid"
cleanup() {
  [ -n "$sampler_pid" ] && kill -TERM "$sampler_pid" 2>/dev/null || true
  [ -f "$recorder_pid_file" ] && "$py" scripts/proc_breakdown.py stop --pid-file "$recorder_pid_file" || true
  bash scripts/pipeline.sh down || true
}
trap cleanup EXIT

snapshot "$out/metrics-before"
"$py" scripts/sustained_check.py sample --out "$out/lag.tsv" &
sampler_pid=$!
"$py" scripts/proc_breakdown.py record --out "$out/proc" --interval 1 --pid-file "$recorder_pid_file" &
for _ in $(seq 1 50); do [ -f "$recorder_pid_file" ] && break; sleep 0.1; done

log "load: $RATE requests/s x $EVENTS_PER_REQUEST events for $DURATION"
load_start=$(now)
k6_status=0
PRE_VUS="${PRE_VUS:-100}" MAX_VUS="${MAX_VUS:-1000}" SUMMARY_DIR="$out" ACK_LOG_FILE="$out/acks.ndjson" \
  bash scripts/k6.sh run --quiet loadtest/k6/sustained-open.js || k6_status=$?
load_end=$(now)

# The recording ends when the last acknowledged event is stored (or the wait gives up): the
# machine's CPU per landed event is the load's and the drain's, not the verifier's.
drain_status=0
"$py" scripts/sustained_check.py drain --acks "$out/acks.ndjson" --before "$out/metrics-before.consumer" \
  --out "$out/drain.json" --timeout "${DRAIN_TIMEOUT_S:-300}" || drain_status=$?
"$py" scripts/proc_breakdown.py stop --pid-file "$recorder_pid_file"
kill -TERM "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=""
snapshot "$out/metrics-after"

verify_status=0
"$bin/verify" --wait 120 "$out/acks.ndjson" 2>&1 | tee "$out/verify.txt" || verify_status=$?

cat >"$out/times.json" <<EOF
{"load_start": $load_start, "load_end": $load_end, "k6_status": $k6_status, "drain_status": $drain_status,
 "verify_status": $verify_status,
 "knobs": {"RATE": "$RATE", "EVENTS_PER_REQUEST": "$EVENTS_PER_REQUEST", "DURATION": "$DURATION", "profile": "$profile"}}
EOF
landed=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("landed", 0))' "$out/drain.json")
"$py" scripts/proc_breakdown.py report "$out/proc" --events "$landed" >/dev/null
echo
status=0
"$py" scripts/sustained_check.py report "$out" || status=$?
log "k6 exit $k6_status (thresholds: loadtest/README.md); results in $out"
exit "$status"
