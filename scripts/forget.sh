#!/usr/bin/env bash
# `make forget`: erase one visitor of one site on the local stack (`make up` first) with
# lake-tools' `forget` command, in the environment of scripts/env.sh (issue #23).
#
#   make forget SITE=local-demo ANONYMOUS_ID=<id>   # file an erasure request, then process it
#   make forget SITE=local-demo USER_ID=<id>        # the same, by the site's own user ID
#   make forget                                     # process what is pending, file nothing
#
# Runs `forget request` (its JSON line: {"request": <id>, ...}) when an ID is given, then
# `forget run` (one JSON summary: requests, completed, dynamo_items_removed, lake_rows_removed,
# lake_objects_rewritten), then `forget status` (the audit, one JSON line per request: the raw
# ID is gone once a request completed, its SHA-256 stays). Exits with `forget run`'s status: 1
# when a request could not be completed (it stays pending; run `make forget` again to resume).
# FORGET_SKIP_BUILD=1 runs the binary already built instead of building it first.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # sets ROOT

die() { printf 'forget: %s\n' "$*" >&2; exit 2; }

# The request, checked before anything is built: make passes empty values for unset variables.
SITE="${SITE:-}"
ANONYMOUS_ID="${ANONYMOUS_ID:-}"
USER_ID="${USER_ID:-}"
request=()
if [ -n "$ANONYMOUS_ID" ] && [ -n "$USER_ID" ]; then
  die "give ANONYMOUS_ID or USER_ID, not both: a request names one ID (file two requests for both)"
elif [ -n "$ANONYMOUS_ID" ]; then
  request=(--anonymous-id "$ANONYMOUS_ID")
elif [ -n "$USER_ID" ]; then
  request=(--user-id "$USER_ID")
fi
if [ ${#request[@]} -gt 0 ] && [ -z "$SITE" ]; then
  die "SITE=<site id> is needed with an ID: a visitor is erased from one site (local stack: SITE=local-demo, config/sites.json)"
fi
if [ ${#request[@]} -eq 0 ] && [ -n "$SITE" ]; then
  die "SITE=$SITE without ANONYMOUS_ID=<id> or USER_ID=<id>: name the visitor (or give neither to process pending requests)"
fi

cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"
# shellcheck source=env.sh
source scripts/env.sh
# The database URL, not the secret: locally both name the same database.
unset DATABASE_SECRET_ARN
bin="$CARGO_TARGET_DIR/debug/forget"
if [ "${FORGET_SKIP_BUILD:-0}" != 1 ] || [ ! -x "$bin" ]; then
  # The whole workspace's binaries, as `make test` builds them: nothing to do after it.
  cargo_step "building forget" build --workspace --bins --locked >&2
fi

if [ ${#request[@]} -gt 0 ]; then
  "$bin" request --site "$SITE" "${request[@]}"
fi
status=0
"$bin" run || status=$?
echo "forget: audit (forget status):" >&2
"$bin" status
exit "$status"
