#!/usr/bin/env bash
# `make demo`: the main job on a fresh machine. Brings the pipeline up, drives a realistic load
# through the HTTP API with k6 (event-type mix, batches and single events, invalid events,
# client retries re-sending the same event_id), waits for the consumer to catch up, reconciles
# every store against what the API acknowledged, prints a summary, then compacts the hours the
# demo wrote and reconciles again (files per partition and median size before and after; the
# verifier and every Athena example query, run with DuckDB, must agree before and after), and
# exits 0 only when nothing was lost or double-counted.
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

# The demo's events land in the hour it runs in (and the next, across the top of an hour).
demo_started=$(date -u +%s)
demo_hour=$(date -u -d "@$demo_started" +%FT%H)

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

# Compaction. The schedule (scripts/schedule.sh) compacts an hour once it has closed, 10 minutes
# after its end, as EventBridge does on AWS; the demo's hours are still open, so it asks the
# compactor for them explicitly (--include-open). That is exact now that the consumer has
# drained (the verifier saw every event claimed and stored): a batch that still arrived would be a
# new file the next run merges, and a redelivered batch of a compacted object writes nothing.
echo
echo "==> compacting the hours the demo wrote ($demo_hour to now; they are still open)"
compact_status=0
py="$root/.local/venv/bin/python"
rm -rf "$out/lake" # copies of an earlier run's lake would be read with this one's
"$py" scripts/demo_lake.py snapshot --since "$demo_hour" --dir "$out/lake" --name before >/dev/null || compact_status=$?
hours=$(( $(date -u +%s) / 3600 - demo_started / 3600 + 1 ))
"$CARGO_TARGET_DIR/debug/compactor" --hours-back "$hours" --include-open >"$out/compactor.log" 2>&1 || compact_status=$?
"$py" scripts/demo_lake.py snapshot --since "$demo_hour" --dir "$out/lake" --name after >/dev/null || compact_status=$?
echo
"$py" scripts/demo_lake.py compare "$out/lake/before.json" "$out/lake/after.json" || compact_status=$?
echo
echo "==> reconciling every store again, on the compacted lake"
verify_after_status=0
"$CARGO_TARGET_DIR/debug/verify" --wait 30 "$out/acks.ndjson" >"$out/verify-after.txt" || verify_after_status=$?
grep -E '^(verify|parquet files)' "$out/verify-after.txt" || true

echo
if [ "$k6_status" -ne 0 ] || [ "$verify_status" -ne 0 ] || [ "$compact_status" -ne 0 ] || [ "$verify_after_status" -ne 0 ]; then
  echo "demo: FAILED (k6 exit $k6_status, verify exit $verify_status, compaction exit $compact_status, verify after compaction exit $verify_after_status)"
  exit 1
fi
echo "demo: OK — the pipeline is still up (make down to stop it; make up to restart)."
echo "demo: open $(bash scripts/demo-page.sh url) — a demo shop with the tracker; click around and watch your events counted."
