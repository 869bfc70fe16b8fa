#!/usr/bin/env bash
# Fault tests: the pipeline under a k6 load while its parts fail, each test ending with the
# verifier's exact reconciliation (nothing lost, nothing double-counted). See scripts/faults/.
#
#   bash scripts/test-faults.sh                 # all of them (about 6-7 minutes)
#   bash scripts/test-faults.sh -k poison       # extra arguments go to pytest
#
# Brings the stack and the pipeline up first (scripts/up.sh, idempotent) and builds the
# verifier and forget (test_07). For the run the pipeline is moved to a stream, bucket, table
# and database of its own, and back to the default ones afterwards. The faults are real: emulators are frozen with
# SIGSTOP, the consumer SIGKILLed, PostgreSQL restarted — anything else using the local stack at
# the same time sees them too. Everything stays on 127.0.0.1; loads are FAULT_RATE (default 40)
# requests/s for at most 85 s. Outputs (ack logs, k6 summaries, verifier reports) go to
# bench/out/faults/<test>/. FAULT_KEEP=1 keeps the run's resources for a post-mortem.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"

started=$SECONDS
bash scripts/up.sh >/dev/null
# shellcheck source=lib.sh
source scripts/lib.sh
cargo_step "building the verifier and forget" build --workspace --bins
status=0
.local/venv/bin/python -m pytest -q -p no:cacheprovider scripts/faults "$@" || status=$?
echo "test-faults: $( [ "$status" -eq 0 ] && echo OK || echo FAILED ) in $((SECONDS - started)) s"
exit "$status"
