#!/usr/bin/env bash
# `make retention`: one retention run against the local stack (README, "Retention"): deletes lake
# and dead-letter hours older than LAKE_RETENTION_DAYS / DEAD_LETTER_RETENTION_DAYS, expired
# DynamoDB items, old ledger days and erasure audit rows. The local stand-in for S3 lifecycle and
# DynamoDB TTL; `make up` also runs it hourly (scripts/schedule.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=lib.sh
source "$root/scripts/lib.sh"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"
profile="${PIPELINE_PROFILE:-debug}"
flag=()
[ "$profile" = release ] && flag=(--release)
cargo_step "building retention ($profile)" build "${flag[@]}" -p lake-tools --bin retention
# shellcheck source=/dev/null
source scripts/env.sh
exec "$CARGO_TARGET_DIR/$profile/retention" "$@"
