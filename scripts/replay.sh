#!/usr/bin/env bash
# `make replay`: the `replay` command against the local stack (`make up` first), with the
# consumer's environment from scripts/env.sh. Dry run unless --execute is among the arguments.
#
#   make replay ARGS="queue"                       # what the on-failure queue holds
#   make replay ARGS="queue --execute"             # replay it, exactly once
#   make replay ARGS="dead-letter --prefix dead-letter/dt=2026-12-07/"
#   make replay ARGS="--help"
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # sets ROOT
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"
# shellcheck source=env.sh
source scripts/env.sh
# The database URL, not the secret: locally both name the same database.
unset DATABASE_SECRET_ARN
# The whole workspace's binaries, as `make test` builds them: nothing to do after it.
cargo_step "building replay" build --workspace --bins --locked >&2
exec "$CARGO_TARGET_DIR/debug/replay" "$@"
