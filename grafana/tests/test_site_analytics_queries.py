"""The "Site analytics" dashboard's SQL, run as Grafana runs it.

Its SQL lives in grafana/sql/site_analytics/*.sql (the generator builds the dashboard JSON from
those files). The static tests check that the dashboard runs exactly those files and never sums
visitor counts. The live test renders every file as Grafana would for one time range and one
site (sqlmacros.py) and runs it with psql: each must return rows, with values; no rows fails.

Which database:
* default: $DATABASE_URL (scripts/env.sh: the local stack's `analytics`). The test first sends a
  small, varied set of events through the running pipeline (scripts/pipeline.sh up; producer on
  127.0.0.1:3000, the site of $SITE_KEY) and waits until the consumer has claimed them all, so
  the rows come from the real path and the range and site to query are known.
* SITE_ANALYTICS_DATABASE_URL=postgres://.../db: query that database as it is, with no load:
  for a scratch database filled by hand while developing. The site is SITE_ANALYTICS_SITE or
  the first the `site` variable offers; the range is the dashboard's default, the last 7 days.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from dashlib import DASHBOARD_DIR, GRAFANA_DIR, REPO_ROOT, iter_panels
import sqlmacros

SQL_DIR = GRAFANA_DIR / "sql" / "site_analytics"
DASHBOARD = DASHBOARD_DIR / "site-analytics.json"
SCRIPTS = REPO_ROOT / "scripts"
PRODUCER = "http://127.0.0.1:3000/events"
# The load this test sends: enough to fill every panel, small enough to take seconds.
VISITORS = 12
PAGES = ["/", "/products/espresso", "/products/grinder", "/cart", "/blog/how-to-brew"]
CONSUMED_WITHIN_S = 120


def sql_files() -> dict[str, str]:
    files = {p.stem: p.read_text() for p in sorted(SQL_DIR.glob("*.sql"))}
    assert files, f"no SQL in {SQL_DIR}"
    return files


def body(text: str) -> str:
    """A file's SQL without its leading comment (what the generator puts in the dashboard)."""
    lines = text.splitlines()
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return "\n".join(lines).strip()


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, SQL) of every panel target and variable of the dashboard JSON."""
    d = json.loads(DASHBOARD.read_text())
    out = [(f"panel {p['title']!r}", t["rawSql"]) for p in iter_panels(d) for t in p.get("targets", [])]
    out += [(f"variable {v['name']}", v["query"]) for v in d["templating"]["list"]]
    return out


# --------------------------------------------------------------------------------------------
# Static: the dashboard runs the files, and the files follow the visitors rule
# --------------------------------------------------------------------------------------------


def test_dashboard_runs_exactly_the_sql_files():
    files = {body(text) for text in sql_files().values()}
    used = dashboard_queries()
    for where, sql in used:
        assert sql in files, f"{where} runs SQL that is not a file in {SQL_DIR}"
    assert {sql for _, sql in used} == files, "every file is shown by a panel or variable"


@pytest.mark.parametrize("name", sorted(sql_files()))
def test_sql_file_is_described_and_filtered(name):
    text = sql_files()[name]
    assert text.startswith("--"), "starts with a comment: it becomes the panel's description"
    sql = body(text)
    assert ";" not in sql, "one statement (Grafana sends the text as one query)"
    assert "$__timeFilter(" in sql or "$__timeFrom()" in sql, "limited to the dashboard's time range"
    if name != "site":
        assert "${site:sqlstring}" in sql, "filtered by the site variable, quoted as an SQL string"


@pytest.mark.parametrize("name", sorted(sql_files()))
def test_visitors_are_never_summed(name):
    """A visitor counted in two hours is one visitor: visitor counts over several rows are the
    cardinality of the union of the sketches, never a sum of per-row cardinalities."""
    sql = body(sql_files()[name])
    assert not re.search(r"\bsum\s*\(\s*(hll_cardinality\s*\(\s*)?visitors\b", sql, re.I), sql
    assert "_stats" not in sql, "read the sketch tables: the *_stats views' counts cannot be combined"
    rest = re.sub(r"hll_cardinality\(hll_union_agg\(visitors\)\)::bigint AS visitors", "", sql)
    assert not re.search(r"\bvisitors\b", rest), f"visitors used other than as the union's cardinality:\n{sql}"


@pytest.mark.parametrize(
    "sql, expected",
    [
        # Grafana's own examples (pkg/tsdb/grafana-postgresql-datasource/macros_test.go), for
        # the range 2018-04-12T18:00:00Z .. 2018-04-12T18:05:00Z.
        ("WHERE $__timeFilter(time_column)",
         "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"),
        ("select $__timeFrom()", "select '2018-04-12T18:00:00Z'"),
        ("select $__timeTo()", "select '2018-04-12T18:05:00Z'"),
        ("select $__time(time_column)", 'select time_column AS "time"'),
        ("select $__unixEpochFilter(time)", "select time >= 1523556000 AND time <= 1523556300"),
        # Variables are interpolated first, the sqlstring format quoted and escaped.
        ("site = ${site:sqlstring} AND x = '$site'", "site = 'o''brien' AND x = 'o'brien'"),
    ],
)
def test_macros_expand_as_grafana_does(sql, expected):
    start = dt.datetime(2018, 4, 12, 18, 0, tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(minutes=5)
    assert sqlmacros.render(sql, start, end, {"site": "o'brien"}) == expected


def test_fractional_seconds_are_written_as_go_does():
    t = dt.datetime(2024, 5, 1, 22, 0, 0, 500000, tzinfo=dt.timezone.utc)
    assert sqlmacros.rfc3339nano(t) == "2024-05-01T22:00:00.5Z"


@pytest.mark.parametrize("sql", ["$__timeGroup(t, '1h')", "$__interval", "$missing", "${site:csv}"])
def test_unknown_macros_and_variables_are_refused(sql):
    start = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(sqlmacros.MacroError):
        sqlmacros.render(sql, start, start, {"site": "a"})


# --------------------------------------------------------------------------------------------
# Live: every query returns rows from PostgreSQL
# --------------------------------------------------------------------------------------------


def psql(url: str, sql: str) -> tuple[list[str], list[list[str]]]:
    """(column names, rows as text; '' is NULL) of one query, through psql in CSV mode."""
    out = subprocess.run(
        ["psql", "-X", "-w", "-q", "--csv", "-v", "ON_ERROR_STOP=1", "-P", "null=\\N", url, "-c", sql],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, f"psql failed on\n{sql}\n{out.stderr}"
    rows = list(csv.reader(io.StringIO(out.stdout)))
    return rows[0], rows[1:]


def stack_env() -> dict[str, str]:
    sys.path.insert(0, str(SCRIPTS))
    import pylib

    return pylib.env_sh()


def site_of_key(key: str) -> str:
    sites = json.loads((REPO_ROOT / "config" / "sites.json").read_text())["sites"]
    matching = [s["id"] for s in sites if s["key"] == key]
    assert matching, f"no site in config/sites.json has the key {key!r}"
    return matching[0]


def load_events(now: dt.datetime) -> list[dict]:
    """A small site's hour: each visitor views some pages (URLs with and without query strings),
    clicks, and a third of them are signed in (user_id)."""
    events = []
    for v in range(VISITORS):
        visitor = {"anonymous_id": f"anon-dash-{uuid.uuid4().hex[:12]}"}
        if v % 3 == 0:
            visitor["user_id"] = f"user-dash-{v}"
        for i, path in enumerate(PAGES[: 1 + v % len(PAGES)]):
            query = "?utm_source=newsletter" if (v + i) % 2 else ""
            occurred = (now - dt.timedelta(seconds=30 * i)).isoformat(timespec="milliseconds")
            url = f"http://127.0.0.1:8080{path}{query}"
            events.append({"event_id": str(uuid.uuid4()), "event_type": "page_view", "occurred_at": occurred,
                           "url": url, **visitor})
            if i % 2:
                events.append({"event_id": str(uuid.uuid4()), "event_type": "click", "occurred_at": occurred,
                               "url": url, "properties": {"target": "add-to-cart"}, **visitor})
    return events


def drive_load(env: dict[str, str]) -> tuple[str, dt.datetime]:
    """Sends the events through the running pipeline and waits until the consumer has claimed
    every one (the per-site aggregates are written in the same transaction as the claim).
    Returns the site and when the events were sent."""
    up = subprocess.run(["bash", str(SCRIPTS / "pipeline.sh"), "up"], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    now = dt.datetime.now(dt.timezone.utc)
    events = load_events(now)
    request = urllib.request.Request(
        PRODUCER, data=json.dumps(events).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-Site-Key": env["SITE_KEY"]},
    )
    # No proxy from the environment: the producer is on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert response.status == 202 and answer["accepted"] == len(events) and not answer["rejected"], answer
    ids = ",".join(f"'{e['event_id']}'" for e in events)
    deadline = time.monotonic() + CONSUMED_WITHIN_S
    while True:
        _, rows = psql(env["DATABASE_URL"], f"SELECT count(*) FROM seen_events WHERE event_id IN ({ids})")
        if int(rows[0][0]) == len(events):
            break
        assert time.monotonic() < deadline, (
            f"the consumer claimed {rows[0][0]} of {len(events)} events in {CONSUMED_WITHIN_S} s "
            "(.local/run/consumer.log)")
        time.sleep(1)
    return site_of_key(env["SITE_KEY"]), now


@pytest.fixture(scope="module")
def target():
    """(database URL, site, range start, range end) to render and run the queries for."""
    scratch = os.environ.get("SITE_ANALYTICS_DATABASE_URL")
    if scratch:
        end = dt.datetime.now(dt.timezone.utc)
        start = end - dt.timedelta(days=7)  # the dashboard's default range
        site = os.environ.get("SITE_ANALYTICS_SITE")
        if not site:
            variable = sqlmacros.render(body(sql_files()["site"]), start, end, {})
            _, rows = psql(scratch, variable)
            assert rows, f"no site has rows in {scratch} in the last 7 days"
            site = rows[0][0]
        return scratch, site, start, end
    if not os.environ.get("DATABASE_URL"):
        pytest.skip("no database: run under scripts/test.sh, or source scripts/env.sh, or set "
                    "SITE_ANALYTICS_DATABASE_URL")
    env = stack_env()
    site, sent = drive_load(env)
    # Hours and days are of occurrence: the hour bucket of the events starts at most an hour
    # before they were sent, and Grafana's range ends at "now".
    return env["DATABASE_URL"], site, sent - dt.timedelta(hours=1), dt.datetime.now(dt.timezone.utc)


def rendered(name: str, target) -> str:
    _, site, start, end = target
    return sqlmacros.render(body(sql_files()[name]), start, end, {"site": site})


@pytest.mark.parametrize("name", sorted(sql_files()))
def test_query_returns_rows(name, target):
    """Invariant: every panel and variable of the dashboard shows data for a site with events."""
    url, site, start, end = target
    sql = rendered(name, target)
    columns, rows = psql(url, sql)
    assert rows, f"{name}.sql returned no rows for site {site!r}, {start:%F %T} .. {end:%F %T} UTC:\n{sql}"
    for row in rows:
        nulls = [c for c, v in zip(columns, row) if v == "\\N"]
        assert not nulls, f"{name}.sql: NULL in {nulls} of {dict(zip(columns, row))}"
    if name == "site":
        assert site in [r[0] for r in rows], f"the site variable does not offer {site!r}: {rows}"


def test_totals_agree_with_the_hourly_panels(target):
    """The stat panels over the range agree with the hourly series: events add up, and visitors
    over the range are at most the sum of each hour's (a visitor of two hours counts once)."""
    url = target[0]
    events_total = int(psql(url, rendered("events_total", target))[1][0][0])
    per_hour = psql(url, rendered("events_per_hour", target))[1]
    assert events_total == sum(int(r[2]) for r in per_hour)
    visitors_total = int(psql(url, rendered("visitors_total", target))[1][0][0])
    visitors_hourly = [int(r[1]) for r in psql(url, rendered("visitors_per_hour", target))[1]]
    assert 0 < visitors_total <= sum(visitors_hourly)
    assert visitors_total >= max(visitors_hourly)


def test_top_pages_have_no_query_strings(target):
    _, rows = psql(target[0], rendered("top_pages", target))
    assert all("?" not in r[0] and "#" not in r[0] for r in rows), rows


def test_countries_sum_to_the_days_events(target):
    """The Countries panel (#23) covers every event of the range's days once: events without a
    country are under "unknown", so the countries add up to the days' events (which the days'
    pages, '' included, also add up to), and no country has more visitors than events."""
    url, site, start, end = target
    columns, rows = psql(url, rendered("countries", target))
    assert columns == ["country", "events", "visitors"]
    assert all(re.fullmatch(r"[A-Z]{2}|unknown", r[0]) for r in rows), rows
    assert all(0 <= int(r[2]) <= int(r[1]) for r in rows), rows
    days = sqlmacros.render(
        "SELECT coalesce(sum(events), 0)::bigint FROM site_daily_pages WHERE site = ${site:sqlstring} "
        "AND day BETWEEN $__timeFrom()::date AND $__timeTo()::date", start, end, {"site": site})
    assert sum(int(r[1]) for r in rows) == int(psql(url, days)[1][0][0])
