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

# cargo_step WHAT ARGS...: `cargo ARGS...` with its progress shown and its time told. Without
# `-q`, cargo shows a progress bar on a terminal and a "Compiling <crate>" line per crate
# elsewhere (logs, CI), so a first build — many minutes on two cores — never looks hung.
cargo_step() {
  local what="$1" started=$SECONDS status=0
  shift
  echo "==> cargo: $what (the first build on a 2-core machine takes ~15 minutes; later ones seconds)" >&2
  cargo "$@" || status=$?
  echo "==> cargo: $what: $([ "$status" -eq 0 ] && echo done || echo "FAILED ($status)") after $((SECONDS - started)) s" >&2
  return "$status"
}
