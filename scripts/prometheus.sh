#!/usr/bin/env bash
# Local Prometheus for the pipeline's /metrics endpoints (see grafana/README.md).
#
#   scripts/prometheus.sh up      install (Debian package) if needed, start, wait until ready
#   scripts/prometheus.sh down    stop the process started by `up`
#   scripts/prometheus.sh status  running? ready? scrape targets
#
# Listens on 127.0.0.1:9090 only. Config: grafana/prometheus/prometheus.local.yml
# (scrapes producer 127.0.0.1:9101 and consumer runner 127.0.0.1:9102 every 5s).
# State lives under .local/: TSDB in .local/prometheus-data, pid file and log in .local/run/.
# Debian's own prometheus service is never left running: it would bind :9090 on all interfaces.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # sets ROOT
CONFIG="$ROOT/grafana/prometheus/prometheus.local.yml"
DATA_DIR="$ROOT/.local/prometheus-data"
RUN_DIR="$ROOT/.local/run"
PID_FILE="$RUN_DIR/prometheus.pid"
LOG_FILE="$RUN_DIR/prometheus.log"
LISTEN="${PROMETHEUS_LISTEN:-127.0.0.1:9090}"
READY_TIMEOUT="${PROMETHEUS_READY_TIMEOUT:-60}"
URL="http://$LISTEN"

log() { printf 'prometheus.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

have_binaries() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

# Stop and disable the Debian package's own service, which listens on :9090 on every interface.
stop_debian_service() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    if systemctl is-active --quiet prometheus.service 2>/dev/null \
       || systemctl is-enabled --quiet prometheus.service 2>/dev/null; then
      log "disabling Debian's prometheus.service (it would conflict on :9090)"
      as_root systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
  elif [ -x /etc/init.d/prometheus ]; then
    if /etc/init.d/prometheus status >/dev/null 2>&1; then
      log "stopping Debian's prometheus init service (it would conflict on :9090)"
      as_root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    fi
    as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
}

install_prometheus() {
  have_binaries && return 0
  command -v apt-get >/dev/null 2>&1 || die "prometheus/promtool not found and apt-get is unavailable"
  log "installing Debian package 'prometheus' (prometheus + promtool)"
  # Keep the package's maintainer scripts from starting the service during install:
  # policy-rc.d exit 101 is honoured by invoke-rc.d and deb-systemd-invoke.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    created_policy=1
  fi
  local rc=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || rc=$?
  if [ "$rc" -eq 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
      >/dev/null || rc=$?
  fi
  if [ "$created_policy" -eq 1 ]; then as_root rm -f "$policy"; fi
  [ "$rc" -eq 0 ] || die "apt-get failed (exit $rc)"
  stop_debian_service
  have_binaries || die "prometheus package installed but prometheus/promtool are still not on PATH"
}

# Pid of our running server, or empty.
our_pid() {
  [ -f "$PID_FILE" ] || return 0
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
     && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--config.file=$CONFIG"; then
    echo "$pid"
  fi
}

is_ready() { curl -fsS --max-time 2 "$URL/-/ready" >/dev/null 2>&1; }

port_in_use() { ss -Hltn "sport = :${LISTEN##*:}" 2>/dev/null | grep -q .; }

wait_ready() {
  local pid="$1" deadline=$((SECONDS + READY_TIMEOUT))
  until is_ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "prometheus (pid $pid) exited during startup; last log lines:"
      tail -n 30 "$LOG_FILE" >&2 || true
      rm -f "$PID_FILE"
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "prometheus (pid $pid) not ready after ${READY_TIMEOUT}s; last log lines:"
      tail -n 30 "$LOG_FILE" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

cmd_up() {
  install_prometheus
  stop_debian_service
  promtool check config "$CONFIG" >/dev/null || die "promtool check config $CONFIG failed"

  local pid
  pid="$(our_pid)"
  if [ -n "$pid" ]; then
    wait_ready "$pid"
    log "already running (pid $pid), ready at $URL"
    return 0
  fi
  rm -f "$PID_FILE"
  if port_in_use; then
    # Another checkout's Prometheus (same local config, same scrape targets) is as good as ours;
    # anything else on the port is an error.
    if curl -fsS "$URL/-/ready" >/dev/null 2>&1; then
      log "a Prometheus not started here already answers at $URL; using it"
      return 0
    fi
    ss -Hltnp "sport = :${LISTEN##*:}" >&2 || true
    die "port ${LISTEN##*:} is already in use by another process; stop it first"
  fi

  mkdir -p "$DATA_DIR" "$RUN_DIR"
  printf '\n=== %s starting prometheus ===\n' "$(date -u +%FT%TZ)" >>"$LOG_FILE"
  # setsid: own session, so it survives the calling shell; the pid file is the handle for `down`.
  setsid prometheus \
    --config.file="$CONFIG" \
    --web.listen-address="$LISTEN" \
    --storage.tsdb.path="$DATA_DIR" \
    --storage.tsdb.retention.time=2d \
    --web.enable-lifecycle \
    </dev/null >>"$LOG_FILE" 2>&1 &
  pid=$!
  echo "$pid" >"$PID_FILE"
  wait_ready "$pid"
  log "started (pid $pid), ready at $URL (log: ${LOG_FILE#"$ROOT"/})"
}

cmd_down() {
  local pid
  pid="$(our_pid)"
  if [ -z "$pid" ]; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  terminate "$pid" 40 0.5 || log "pid $pid did not stop after 20s; sent SIGKILL"
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

cmd_status() {
  local pid
  pid="$(our_pid)"
  if [ -z "$pid" ]; then
    echo "prometheus: stopped"
    return 3
  fi
  if ! is_ready; then
    echo "prometheus: running (pid $pid) but not ready at $URL"
    return 1
  fi
  echo "prometheus: running (pid $pid), ready at $URL"
  curl -fsS --max-time 5 "$URL/api/v1/targets?state=active" | python3 -c '
import json, sys
for t in json.load(sys.stdin)["data"]["activeTargets"]:
    err = t.get("lastError") or ""
    print("  target %-10s %-22s %-5s %s" % (t["labels"].get("job", "?"), t["scrapeUrl"].split("//")[-1].split("/")[0], t["health"], err))
' || true
}

case "${1:-}" in
  install) install_prometheus ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
esac
