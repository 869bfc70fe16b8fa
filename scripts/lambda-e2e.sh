#!/usr/bin/env bash
# `make lambda-e2e`: the bootstrap binaries of the Lambda zips under cargo-lambda's runtime emulator
# (`cargo lambda watch --only-lambda-apis`) against the local stack; steps in
# scripts/lambda_e2e/__init__.py. Ends with one line starting with `lambda-e2e:`.
#
#   bash scripts/lambda-e2e.sh                      # bootstraps from target/lambda/<fn>/bootstrap.zip
#   bash scripts/lambda-e2e.sh --bin-dir "$CARGO_TARGET_DIR/release"   # or any built binaries
#   bash scripts/lambda-e2e.sh --help
#
# Needs: the zips (`make package`), cargo-lambda (.local/venv/bin/cargo-lambda, which `make package`
# installs; or CARGO_LAMBDA=/path/to/cargo-lambda), the local stack (started here when down; never
# stopped), the verifier (built here: cargo build --workspace --bins).
# Env: LAMBDA_E2E_LAMBDA_MIGRATES=1|0 the consumer does|does not migrate at init (default: detected)
#      LAMBDA_E2E_BATCH_SIZE=N        records per consumer invocation (default 4: records pack events)
# Writes bench/out/lambda-e2e/ (init.json, acks.ndjson, emulator logs).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # sets ROOT, cargo_step
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"

case "${1:-}" in -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

if [ -z "${CARGO_LAMBDA:-}" ] && [ ! -x .local/venv/bin/cargo-lambda ]; then
  bash scripts/package.sh --install-tools # cargo-lambda's runtime emulator, pinned
fi
bash scripts/local-stack.sh up
cargo_step "the verifier" build --workspace --bins --locked
cd scripts
exec ../.local/venv/bin/python -m lambda_e2e "$@"
