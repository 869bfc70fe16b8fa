#!/usr/bin/env bash
# `make demo`: the main job on a fresh machine. Brings the pipeline up, drives a realistic load
# through the HTTP API with k6 (event-type mix, batches and single events, invalid events,
# client retries re-sending the same event_id), waits for the consumer to catch up, reconciles
# every store against what the API acknowledged, prints a summary, and exits 0 only when
# nothing was lost or double-counted.
#
#   DEMO_RATE=requests/s (default 100, ~1,300 events/s)  DEMO_DURATION=k6 duration (default 30s)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/web-analytics-pipeline/target}"
out="${DEMO_OUT:-bench/out/demo}"
mkdir -p "$out"

bash scripts/up.sh
bash scripts/demo-page.sh up
# shellcheck source=lib.sh
source scripts/lib.sh
cargo_step "building the verifier" build --workspace --bins
# shellcheck source=/dev/null
source scripts/env.sh

echo
echo "==> k6: ${DEMO_RATE:-100} requests/s for ${DEMO_DURATION:-30s} against http://127.0.0.1:3000"
k6_status=0
PRE_VUS="${DEMO_PRE_VUS:-300}" RATE="${DEMO_RATE:-100}" DURATION="${DEMO_DURATION:-30s}" SUMMARY_DIR="$out" ACK_LOG_FILE="$out/acks.ndjson" \
  bash scripts/k6.sh run --quiet loadtest/k6/sustained.js || k6_status=$?

echo
echo "==> reconciling every store against the API's acknowledgements"
verify_status=0
"$CARGO_TARGET_DIR/debug/verify" --wait 180 "$out/acks.ndjson" | tee "$out/verify.txt" || verify_status=$?

python3 - "$out/sustained-summary.json" <<'PY'
import json, sys, urllib.request
s = json.load(open(sys.argv[1]))
m = s["metrics"]
val = lambda name, key="count": m.get(name, {}).get("values", {}).get(key, 0)
secs = s.get("state", {}).get("testRunDurationMs", 0) / 1000 or 1
lag = "n/a"
try:
    text = urllib.request.urlopen("http://127.0.0.1:9102/metrics", timeout=2).read().decode()
    lags = [float(l.split()[-1]) for l in text.splitlines() if l.startswith("consumer_millis_behind_latest")]
    lag = f"{max(lags):.0f} ms" if lags else "0 ms"
except Exception as e:
    lag = f"unavailable ({e.__class__.__name__})"
print()
print("Summary")
print(f"  requests            {val('http_reqs'):.0f} ({val('http_reqs', 'rate'):.0f}/s), p99 {val('http_req_duration', 'p(99)'):.1f} ms")
print(f"  events sent         {val('sent_events'):.0f} ({val('sent_events') / secs:.0f}/s)")
print(f"  events accepted     {val('accepted_events'):.0f}")
print(f"  events rejected     {val('rejected_events'):.0f} (invalid on purpose)")
print(f"  client retries      {val('duplicate_requests'):.0f} requests re-sent with the same event_ids")
print(f"  consumer lag now    {lag}")
PY

# What a site owner sees first (the "Site analytics" figures, migration 0005): visitors are the
# union of the hourly sketches, never a sum of per-hour numbers.
echo
echo "Per site (PostgreSQL site_hourly / site_daily_page_stats)"
psql -X -q "$DATABASE_URL" -v ON_ERROR_STOP=1 -P footer=off <<'SQL' || echo "  (site aggregates unavailable)"
SELECT site, sum(events) AS events, hll_cardinality(hll_union_agg(visitors))::bigint AS visitors
FROM site_hourly GROUP BY site ORDER BY events DESC;
SELECT site, path, sum(views) AS views, sum(events) AS events
FROM site_daily_page_stats WHERE path <> '' GROUP BY site, path ORDER BY views DESC, path LIMIT 5;
SQL

echo
if [ "$k6_status" -ne 0 ] || [ "$verify_status" -ne 0 ]; then
  echo "demo: FAILED (k6 exit $k6_status, verify exit $verify_status)"
  exit 1
fi
echo "demo: OK — the pipeline is still up (make down to stop it; make up to restart)."
echo "demo: open $(bash scripts/demo-page.sh url) — a demo shop with the tracker; click around and watch your events counted."
