#!/usr/bin/env bash
# The demo shop page (tracker/demo/) on http://127.0.0.1:8080/, in the background, posting to the
# pipeline `make up` started (producer :3000, site key pk_local_demo). Builds the tracker first
# (npm ci from its lock file when node_modules is missing). Pid and log under .local/run/.
#
#   scripts/demo-page.sh up|down|url      DEMO_PORT (8080)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck source=lib.sh
source scripts/lib.sh
run_dir="$root/.local/run"
mkdir -p "$run_dir"
pid_file="$run_dir/demo-page.pid"
url="http://127.0.0.1:${DEMO_PORT:-8080}/"
alive() { [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }

case "${1:-}" in
  up)
    if alive; then echo "demo-page: already running (pid $(cat "$pid_file")) on $url"; exit 0; fi
    [ -d tracker/node_modules ] || npm ci --prefix tracker --no-audit --no-fund --loglevel=error
    node tracker/build.mjs
    DEMO_PORT="${DEMO_PORT:-8080}" nohup node tracker/demo/serve.mjs >>"$run_dir/demo-page.log" 2>&1 &
    echo $! >"$pid_file"
    for _ in $(seq 1 50); do curl -fsS --max-time 1 -o /dev/null "$url" 2>/dev/null && break; sleep 0.1; done
    curl -fsS --max-time 1 -o /dev/null "$url" || { tail -5 "$run_dir/demo-page.log" >&2; exit 1; }
    echo "demo-page: started (pid $(cat "$pid_file")) on $url"
    ;;
  down)
    if alive; then terminate "$(cat "$pid_file")" 50 0.1 || true; echo "demo-page: stopped"; fi
    rm -f "$pid_file"
    ;;
  url) echo "$url" ;;
  *) echo "usage: $0 up|down|url" >&2; exit 2 ;;
esac
