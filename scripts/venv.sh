#!/usr/bin/env bash
# Create or update the project's Python dev venv at .local/venv (relative to the repo root).
#
#   bash scripts/venv.sh            # create/update; a no-op when nothing changed
#   bash scripts/venv.sh --force    # reinstall every requirements file
#
# Every scripts/requirements/*.txt is installed with its own
#   pip install --require-hashes -r FILE
# so each file must be fully pinned with hashes, transitive dependencies included
# (pip-compile --generate-hashes). Files are installed in name order; if two files pin the same
# package to different versions the later file wins, so keep shared pins in agreement.
#
# A stamp file (.local/venv/.requirements.sha256) holds the sha256 of the requirement files and
# the interpreter version: when it matches, nothing is installed and no network is needed.
#
# Env: PYTHON  interpreter used to create the venv (default: python3; needs >= 3.10)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.local/venv"
REQ_DIR="$ROOT/scripts/requirements"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

log() { printf 'venv: %s\n' "$*" >&2; }
die() { printf 'venv: ERROR: %s\n' "$*" >&2; exit 1; }

force=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (usage: venv.sh [--force])" ;;
esac

shopt -s nullglob
reqs=("$REQ_DIR"/*.txt)
shopt -u nullglob
[ "${#reqs[@]}" -gt 0 ] || die "no requirement files in $REQ_DIR"

mkdir -p "$ROOT/.local"

# Serialise concurrent runs (e.g. two `local-stack.sh up` at once).
if command -v flock >/dev/null 2>&1; then
  exec 8>"$ROOT/.local/venv.lock"
  flock -w 600 8 || die "timed out waiting for another venv.sh run (lock $ROOT/.local/venv.lock)"
fi

venv_python_ok() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1
}

# Hash of the requirement files (names + contents) plus the venv's interpreter version.
compute_stamp() {
  local pyver
  pyver="$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')"
  {
    printf 'python %s\n' "$pyver"
    (cd "$REQ_DIR" && sha256sum -- *.txt)
  } | sha256sum | cut -d' ' -f1
}

if [ "$force" = 0 ] && venv_python_ok && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(compute_stamp)" ]; then
  log "up to date ($VENV)"
  exit 0
fi

if ! venv_python_ok; then
  command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install python3 (>= 3.10) or set PYTHON=/path/to/python3"
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "$("$PYTHON" -V 2>&1) is too old; need Python >= 3.10 (set PYTHON=...)"
  rm -rf "$VENV"
  log "creating $VENV with $("$PYTHON" -V 2>&1)"
  if ! "$PYTHON" -m venv "$VENV" 2>"$ROOT/.local/venv-create.err"; then
    # Debian's python3 ships venv/ensurepip separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && grep -q ensurepip "$ROOT/.local/venv-create.err"; then
      log "python3 -m venv needs the Debian package python3-venv; installing it"
      apt-get update -qq || die "apt-get update failed"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
        || die "apt-get install python3-venv failed"
      rm -rf "$VENV"
      "$PYTHON" -m venv "$VENV" || die "python3 -m venv $VENV failed"
    else
      cat "$ROOT/.local/venv-create.err" >&2
      die "python3 -m venv $VENV failed (on Debian: apt-get install python3-venv)"
    fi
  fi
  rm -f "$ROOT/.local/venv-create.err"
fi

rm -f "$STAMP"
export PIP_DISABLE_PIP_VERSION_CHECK=1
for f in "${reqs[@]}"; do
  log "pip install --require-hashes -r ${f#"$ROOT"/}"
  "$VENV/bin/python" -m pip install --quiet --require-hashes -r "$f" \
    || die "pip install --require-hashes -r $f failed (network down, or a package/hash missing from the file?)"
done

compute_stamp >"$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP"
log "ready ($VENV)"
