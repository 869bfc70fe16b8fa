# shellcheck shell=bash
# Shell functions shared by the scripts in scripts/ (sourced, never run).

# The repository root, wherever the caller was started from.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# terminate PID TRIES INTERVAL: SIGTERM to PID, then up to TRIES checks INTERVAL seconds apart for
# it to exit; SIGKILL when it is still there after that. Status 1 when SIGKILL was needed.
terminate() {
  local pid="$1" tries="$2" interval="$3" _
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 "$tries"); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep "$interval"
  done
  kill -0 "$pid" 2>/dev/null || return 0
  kill -KILL "$pid" 2>/dev/null || true
  return 1
}
