#!/usr/bin/env bash
# `make test`: formatting, lints, then every test — Rust unit and integration tests against the
# local stack, and the Python checks (stack, Terraform, dashboards, load-test scripts).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "build (also the binaries the stack and tests start)"
cargo build --workspace --all-targets --locked

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tracking plans (make plan-check)"
bash scripts/plan-check.sh

step "local stack"
bash scripts/local-stack.sh up
# shellcheck source=/dev/null
source scripts/env.sh

# The local DynamoDB's store (scripts/emulators/btree-level.js) against abstract-level's own
# compliance suite (installed with the emulators by the step above); only failures are shown.
step "emulator store (abstract-level test suite)"
npm test --prefix scripts/emulators --silent | grep -E '^(not ok|# tests$|# tests |# pass |# fail | )'

step "cargo test (unit + integration against the local stack)"
cargo test --workspace --locked -- --test-threads=4

# The Lambda entry points (lambda_http, lambda_runtime, EMF) of the debug builds above, under
# cargo-lambda's runtime emulator: the same code as the zips, without the release build that
# `make package` takes many minutes for on two cores (`make lambda-e2e` runs the zips).
step "Lambda e2e (the three binaries under a Lambda runtime emulator)"
bash scripts/lambda-e2e.sh --bin-dir "$CARGO_TARGET_DIR/debug" --init-starts 0

# The tracker (unit tests, size budget) and then in headless Chromium against its own pipeline.
step "browser tests (the tracker in Chromium)"
bash scripts/test-browser.sh

step "python checks (stack, Terraform, dashboards and rules)"
# promtool (Debian's prometheus package) checks the Prometheus config and alert rules.
# grafana/tests runs the Site analytics dashboard's SQL against the local `analytics` database.
# The tests before it leave no rows of their own there (the cargo tests, lambda-e2e and the
# browser test use databases of their own; scripts/tests' k6 run does, but only when it runs
# first), so that test sends its own small load through scripts/pipeline.sh (the debug build
# above) and waits for the consumer before it queries: the order below does not matter.
bash scripts/prometheus.sh install
py_dirs=()
for d in scripts/tests terraform/tests grafana/tests loadtest/tests athena/tests; do
  [ -d "$d" ] && py_dirs+=("$d")
done
.local/venv/bin/python -m pytest -q "${py_dirs[@]}"
