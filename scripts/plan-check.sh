#!/usr/bin/env bash
# `make plan-check`: lints the tracking plans (schemas/tracking-plan/<event_type>.json) with the
# producer's own checks: file name an event type, valid JSON Schema draft 2020-12 (meta-schema),
# an object schema, `x-mode` enforce or warn, and it compiles. See README "Tracking plan".
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"
cargo run --quiet --locked -p producer-api --example plan_check -- schemas/tracking-plan
