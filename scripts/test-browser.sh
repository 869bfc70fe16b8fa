#!/usr/bin/env bash
# `make test-browser`: the tracker in a real browser against the real pipeline. Builds and unit-
# tests the tracker, then, on the shared local emulators, starts this run's own pipeline (its own
# Kinesis stream, DynamoDB table, S3 bucket, PostgreSQL database analytics_browser, producer and
# consumer on free ports) and two demo page servers: one on an allowed origin (127.0.0.1) and one
# on an origin the site does not allow (127.0.0.2). Headless Debian chromium (scripts/browser/
# run.mjs) clicks through the SPA, goes offline and back, reloads mid-queue, sends more than a
# rate-limited site may (429 + Retry-After) and closes the tab;
# then every event the page created must be in the stream, the lake, DynamoDB and PostgreSQL
# exactly once (the load test's verifier) and nothing else: no event from before consent, none
# from the forbidden origin (scripts/browser/check_stores.py). Exits non-zero on any failure and
# stops what it started.
#
#   BROWSER_TEST_KEEP=1 keeps the stream, table and bucket (the database is kept anyway).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck source=lib.sh
source scripts/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"
started=$SECONDS
say() { printf 'test-browser: %s\n' "$*"; }
die() { say "FAILED: $*" >&2; exit 1; }

# --- tools: chromium from Debian, npm packages pinned by their lock files ------------------------
if [ ! -x /usr/bin/chromium ]; then
  [ "$(id -u)" = 0 ] || die "/usr/bin/chromium is missing and this is not root: apt-get install -y chromium"
  say "installing Debian's chromium (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || die "apt-get install chromium failed"
fi
npm_ci() { # dir: npm ci when node_modules is missing or older than the lock file
  if [ ! -d "$1/node_modules" ] || [ "$1/package-lock.json" -nt "$1/node_modules" ]; then
    say "npm ci --prefix $1"
    npm ci --prefix "$1" --no-audit --no-fund --loglevel=error || die "npm ci in $1 failed"
    touch "$1/node_modules"
  fi
}
npm_ci tracker
npm_ci scripts/browser

say "building and unit-testing the tracker"
node tracker/build.mjs || die "the tracker build failed"
node --test --test-reporter=dot tracker/test/ || die "the tracker's unit tests failed"

# --- the pipeline: shared emulators, this run's own resources and processes ---------------------
bash scripts/local-stack.sh status >/dev/null || bash scripts/local-stack.sh up
cargo_step "building the producer, the consumer and the verifier" build --workspace --bins
bin="$CARGO_TARGET_DIR/debug"
# shellcheck source=/dev/null
source scripts/env.sh
suffix="$(date +%H%M%S)-$RANDOM"
export STREAM_NAME="browser-test-$suffix" DYNAMODB_TABLE="browser-test-$suffix" LAKE_BUCKET="browser-test-$suffix"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/analytics_browser"
export DATABASE_SECRET_NAME="browser-test/$suffix"
unset DATABASE_SECRET_ARN
site_id=local-demo
site_key=pk_local_demo
out="bench/out/browser"
rm -rf "$out" && mkdir -p "$out"
py="$root/.local/venv/bin/python"
[ -x "$py" ] || bash scripts/venv.sh # the emulators may be up from another clone

pids=()
summary="stopped before the end"
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do terminate "$pid" 100 0.1 || true; done
  if [ "${BROWSER_TEST_KEEP:-0}" != 1 ]; then
    "$py" scripts/browser/check_stores.py --delete >/dev/null 2>&1 || say "could not delete this run's resources"
  fi
  if [ "$status" -eq 0 ]; then say "ok: $summary"; else say "FAILED ($summary) after $((SECONDS - started)) s; logs in $out/"; fi
  exit "$status"
}
trap cleanup EXIT

say "resources: stream/table/bucket $STREAM_NAME, database analytics_browser"
STREAM_SHARDS=1 "$py" scripts/bootstrap_resources.py >"$out/bootstrap.log" 2>&1 \
  || { cat "$out/bootstrap.log"; die "creating the resources failed"; }
psql -w -h 127.0.0.1 -U postgres -X -q -v ON_ERROR_STOP=1 \
  -c "drop database if exists analytics_browser with (force)" -c "create database analytics_browser" postgres
"$bin/stream-consumer" migrate >"$out/migrate.log" 2>&1 || { cat "$out/migrate.log"; die "migrations failed"; }

read -r producer_port producer_metrics consumer_metrics page_port forbidden_port < <("$py" - <<'PY'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)
endpoint="http://127.0.0.1:$producer_port/events"
page_url="http://127.0.0.1:$page_port/"
forbidden_url="http://127.0.0.2:$forbidden_port/"

# The local sites file (local-demo allows any port of 127.0.0.1 and localhost; 127.0.0.2 is not
# in it) plus a site with a low rate limit, for the phase that meets 429 and Retry-After.
limited_site=browser-limited
limited_key=pk_browser_limited
sites_json="$("$py" - "$root/config/sites.json" "$site_id" "$limited_site" "$limited_key" <<'PY'
import json, sys
path, base_id, site_id, key = sys.argv[1:]
doc = json.load(open(path))
base = next(s for s in doc["sites"] if s["id"] == base_id)
doc["sites"].append({**base, "id": site_id, "key": key, "events_per_second": 100, "burst": 500,
                     "per_ip_events_per_second": 100, "per_ip_burst": 500})
print(json.dumps(doc))
PY
)" || die "cannot read config/sites.json"
site_env=(SITES_JSON="$sites_json")
background() { # name command...: start it, log to $out/name.log, remember its pid
  local name=$1; shift
  "$@" >>"$out/$name.log" 2>&1 &
  pids+=("$!")
  say "$name started (pid $!)"
}
background producer env LOG_FORMAT=text BIND_ADDR="127.0.0.1:$producer_port" METRICS_ADDR="127.0.0.1:$producer_metrics" \
  "${site_env[@]}" "$bin/producer-api"
background consumer env LOG_FORMAT=text METRICS_ADDR="127.0.0.1:$consumer_metrics" RUNNER_BATCH_WINDOW_MS=200 "$bin/stream-consumer"
page_env=(DEMO_ENDPOINT="$endpoint" DEMO_SITE_KEY="$site_key" DEMO_REQUIRE_CONSENT=1)
background page env "${page_env[@]}" DEMO_HOST=127.0.0.1 DEMO_PORT="$page_port" node tracker/demo/serve.mjs
background forbidden-page env "${page_env[@]}" DEMO_HOST=127.0.0.2 DEMO_PORT="$forbidden_port" node tracker/demo/serve.mjs
for url in "http://127.0.0.1:$producer_port/health" "http://127.0.0.1:$consumer_metrics/metrics" "$page_url" "$forbidden_url"; do
  for _ in $(seq 1 600); do curl -fsS --max-time 2 -o /dev/null "$url" 2>/dev/null && continue 2; sleep 0.1; done
  tail -n 20 "$out"/*.log >&2
  die "$url did not answer within 60 s"
done
say "pipeline up: producer $endpoint, page $page_url, forbidden page $forbidden_url"

# --- the browser, then the stores --------------------------------------------------------------
summary="failed in the browser"
browser_started=$SECONDS
PAGE_URL="$page_url" FORBIDDEN_URL="$forbidden_url" ENDPOINT="$endpoint" OUT="$out" SITE_ID="$site_id" \
  LIMITED_KEY="$limited_key" LIMITED_SITE_ID="$limited_site" \
  node scripts/browser/run.mjs || die "the browser run failed"
browser_secs=$((SECONDS - browser_started))

summary="failed reconciling the stores"
say "reconciling every store against the events the page created"
"$bin/verify" --wait 120 "$out/created.ndjson" | tee "$out/verify.txt" || die "the verifier found a loss or a double count"
"$py" scripts/browser/check_stores.py "$out" | tee "$out/check_stores.txt" || die "the stores hold something they should not"
site_columns="$(grep -o 'site checked in [0-9] of 3 stores' "$out/check_stores.txt")"
events=$(grep -c . "$out/created.ndjson")
summary="$events events from headless chromium stored exactly once (stream, lake, DynamoDB, PostgreSQL), ${site_columns}, none before consent, 429s honoured, the forbidden origin refused; browser ${browser_secs} s, total $((SECONDS - started)) s"
