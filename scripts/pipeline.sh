#!/usr/bin/env bash
# The pipeline processes on top of the local stack: producer-api as a local server on
# 127.0.0.1:3000, stream-consumer's local runner and the schedule (scripts/schedule.sh: the
# compactor every COMPACT_EVERY_SECONDS, default 600, and retention hourly, as EventBridge, S3
# lifecycle and DynamoDB TTL do on AWS), in the background with pid files and logs under .local/run/.
#
#   scripts/pipeline.sh up|down|status
#
# PIPELINE_PROFILE=debug|release picks the build (default debug: it shares the test build).
# PIPELINE_SKIP_BUILD=1 starts the binaries already built (fault tests restart a killed process
# under load without a rebuild in the middle of it). PIPELINE_SCHEDULE=0 leaves the schedule out
# (the benchmarks, whose CPU figures a compaction run would blur).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=lib.sh
source "$root/scripts/lib.sh"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"
profile="${PIPELINE_PROFILE:-debug}"
run_dir="$root/.local/run"
mkdir -p "$run_dir"
# shellcheck source=/dev/null
source scripts/env.sh

log() { printf 'pipeline: %s\n' "$*"; }

# A process that exited but is not reaped yet (a zombie, e.g. just after a SIGKILL) still
# answers kill -0: it counts as gone, or `up` would report it "already running" and not restart it.
running() { kill -0 "$1" 2>/dev/null && [ "$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

alive() { [ -f "$run_dir/$1.pid" ] && running "$(cat "$run_dir/$1.pid")"; }

wait_http() { # name url seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do
    if curl -fsS --max-time 2 -o /dev/null "$2" 2>/dev/null; then return 0; fi
    alive "$1" || { log "$1 exited; last log lines:"; tail -20 "$run_dir/$1.log" >&2; return 1; }
    sleep 0.1
  done
  log "$1 did not answer on $2 within $3 s"; tail -20 "$run_dir/$1.log" >&2; return 1
}

start() { # name binary env...
  local name=$1 bin=$2; shift 2
  if alive "$name"; then log "$name already running (pid $(cat "$run_dir/$name.pid"))"; return 0; fi
  env "$@" "$bin" >>"$run_dir/$name.log" 2>&1 &
  echo $! >"$run_dir/$name.pid"
  log "$name started (pid $!, log $run_dir/$name.log)"
}

stop() { # name
  local name=$1
  alive "$name" || { rm -f "$run_dir/$name.pid"; return 0; }
  local pid; pid=$(cat "$run_dir/$name.pid")
  kill -TERM "$pid" 2>/dev/null || true
  # The consumer finishes the batch in hand before it exits.
  for _ in $(seq 1 300); do running "$pid" || break; sleep 0.1; done
  running "$pid" && { log "$name did not stop in 30 s; killing"; kill -KILL "$pid" 2>/dev/null || true; }
  rm -f "$run_dir/$name.pid"
  log "$name stopped"
}

cmd_up() {
  local flag=()
  [ "$profile" = release ] && flag=(--release)
  local bin="$CARGO_TARGET_DIR/$profile"
  if [ "${PIPELINE_SKIP_BUILD:-0}" != 1 ] || [ ! -x "$bin/producer-api" ] || [ ! -x "$bin/stream-consumer" ] \
    || [ ! -x "$bin/compactor" ] || [ ! -x "$bin/retention" ]; then
    # Every binary of the workspace, as every script builds them: one feature set, built once.
    cargo_step "building the pipeline's binaries ($profile)" build "${flag[@]}" --workspace --bins
  fi
  start producer "$bin/producer-api" BIND_ADDR=127.0.0.1:3000 METRICS_ADDR=127.0.0.1:9101 \
    SITES_CONFIG="${SITES_CONFIG:-$root/config/sites.json}"
  start consumer "$bin/stream-consumer" METRICS_ADDR=127.0.0.1:9102
  wait_http producer http://127.0.0.1:3000/health 30
  wait_http consumer http://127.0.0.1:9102/metrics 60
  # After the consumer: its start-up applies the migrations the compactor and retention use.
  if [ "${PIPELINE_SCHEDULE:-1}" != 0 ]; then
    start schedule "$root/scripts/schedule.sh" COMPACTOR="$bin/compactor" RETENTION="$bin/retention"
  fi
}

# The schedule first: a compaction it has running is stopped (crash-safe) before the consumer.
cmd_down() { stop schedule; stop consumer; stop producer; }

cmd_status() {
  for n in producer consumer schedule; do
    if alive "$n"; then echo "$n: up (pid $(cat "$run_dir/$n.pid"))"; else echo "$n: down"; fi
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
