#!/usr/bin/env bash
# `make bench-ledger`: the PostgreSQL write path alone — the consumer's claim + aggregate
# transaction with 1, 4, 16 and 64 concurrent writers committing 500-event batches (80% of
# events in 3 types, 1% repeated IDs) against the local PostgreSQL, in a scratch database
# `ledger_bench` that each writer count recreates. Prints a markdown table (events/s, commit
# p50/p99/max, WAL and ledger bytes per event, the cost of pruning) and saves it under
# bench/out/ledger-bench.md. Not part of `make test`: it loads the machine for minutes.
#
#   bash scripts/ledger-bench.sh                       # the defaults above, 20 s per writer count
#   bash scripts/ledger-bench.sh --writers 16 --seconds 60 --prefill 5000000
#   bash scripts/ledger-bench.sh --help                # every option
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # sets ROOT
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"
bash scripts/local-stack.sh postgres
cargo_step "release build of the ledger bench" build --release --locked --workspace --examples
mkdir -p bench/out
"$CARGO_TARGET_DIR/release/examples/ledger_bench" "$@" | tee bench/out/ledger-bench.md
