#!/usr/bin/env python3
"""Run the Athena example queries (athena/queries/*.sql) with DuckDB over a local copy of the lake.

    .local/venv/bin/python athena/run_queries.py --lake DIR --expected EXPECTED.json
    .local/venv/bin/python athena/run_queries.py --lake DIR --against DIR2 --bench 15 \
        --params 2024-05-01 2024-05-01

DIR has the bucket's key layout: DIR/events/dt=YYYY-MM-DD/hour=HH/*.parquet and
DIR/dead-letter/dt=YYYY-MM-DD/hour=HH/*.ndjson.

EXPECTED.json maps each query file's stem to {"params": [...], "columns": [...], "rows": [[...]]}.
Every query file needs an entry and every entry a file, so a query cannot go unchecked. Rows are
compared in order (every query has a total ORDER BY); floats to 1e-6. Exit status 1 on any
difference. lake-tools/tests/athena_queries.rs writes the lake and the expectations.

The query text runs unchanged. Where Athena engine v3 (Trino) and DuckDB differ, the bridge is
here, never in the queries:
  * tables: Glue tables with partition projection become DuckDB views over read_parquet /
    read_json with Hive partitioning; dt and hour stay strings, as in Glue (DuckDB would
    otherwise guess DATE and BIGINT).
  * time zone: the lake's timestamps are UTC instants. Athena works in UTC; DuckDB reads them as
    TIMESTAMP WITH TIME ZONE and uses its session zone, which is set to UTC.
  * functions DuckDB lacks (url_extract_path, to_unixtime) are defined as macros with Trino's
    meaning for the URLs and timestamps the lake holds.
  * approx_distinct becomes the exact count(DISTINCT ...): the check pins what a query counts
    (which rows, which identity, which groups), and its expectations are exact. Trino's estimate
    (HyperLogLog, 2.3% standard error) cannot be reproduced by DuckDB's own sketch, which already
    answers 41 for 40 values.
  * parameters: Athena binds `?` from ExecutionParameters, DuckDB from the params list.
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import json
import math
import statistics
import sys
import time
from pathlib import Path

import duckdb

QUERIES = Path(__file__).resolve().parent / "queries"

DEAD_LETTER_COLUMNS = {
    "reason_code": "VARCHAR",
    "reason": "VARCHAR",
    "shard_id": "VARCHAR",
    "sequence_number": "VARCHAR",
    "line": "INTEGER",
    "approximate_arrival": "VARCHAR",
    "payload_base64": "VARCHAR",
}


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def connect(lake: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    partitions = "hive_partitioning = true, hive_types = {'dt': VARCHAR, 'hour': VARCHAR}"
    events = sql_string(str(lake / "events" / "*" / "*" / "*.parquet"))
    # union_by_name: files written before a column was added (e.g. `site`) read it as NULL, as
    # Athena does (it matches Parquet columns by name).
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet({events}, {partitions}, union_by_name = true)")
    dead_letter = sorted((lake / "dead-letter").glob("*/*/*.ndjson"))
    columns = ", ".join(f"{sql_string(k)}: {sql_string(v)}" for k, v in DEAD_LETTER_COLUMNS.items())
    if dead_letter:
        pattern = sql_string(str(lake / "dead-letter" / "*" / "*" / "*.ndjson"))
        con.execute(
            f"CREATE VIEW dead_letter AS SELECT * FROM read_json({pattern}, format = 'newline_delimited', "
            f"columns = {{{columns}}}, {partitions})"
        )
    else:
        # No quarantined records: the table exists and is empty, as on Athena.
        nulls = ", ".join(f"CAST(NULL AS {t}) AS {k}" for k, t in DEAD_LETTER_COLUMNS.items())
        con.execute(f"CREATE VIEW dead_letter AS SELECT {nulls}, CAST(NULL AS VARCHAR) AS dt, "
                    "CAST(NULL AS VARCHAR) AS hour WHERE false")
    # Trino's url_extract_path: the path of an absolute URL ('' when it has none).
    con.execute(
        "CREATE MACRO url_extract_path(u) AS "
        "regexp_extract(u, '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*([^?#]*)', 1)"
    )
    # Trino's to_unixtime: seconds since the epoch as a double.
    con.execute("CREATE MACRO to_unixtime(t) AS epoch(t)")
    # Trino's approx_distinct, exactly (see the module docstring).
    con.execute("CREATE MACRO approx_distinct(x) AS count(DISTINCT x)")
    return con


def queries(only: str | None = None) -> dict[str, str]:
    found = {p.stem: p.read_text() for p in sorted(QUERIES.glob("*.sql"))}
    if only is not None:
        if only not in found:
            raise SystemExit(f"no query {only!r} in {QUERIES}")
        return {only: found[only]}
    return found


def normal(value):
    """A value as JSON would carry it."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) or isinstance(b, float):
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
        return a == b
    return a == b


def check(con, name: str, sql: str, expected: dict) -> list[str]:
    cursor = con.execute(sql, expected.get("params", []))
    columns = [d[0] for d in cursor.description]
    rows = [[normal(v) for v in row] for row in cursor.fetchall()]
    problems = []
    if columns != expected["columns"]:
        problems.append(f"columns {columns}, expected {expected['columns']}")
    want = expected["rows"]
    if len(rows) != len(want):
        problems.append(f"{len(rows)} rows, expected {len(want)}")
    for i, (got, exp) in enumerate(zip(rows, want)):
        if len(got) != len(exp) or not all(same(g, e) for g, e in zip(got, exp)):
            problems.append(f"row {i}: got {got}, expected {exp}")
    if problems:
        problems.append("got:      " + json.dumps(rows))
        problems.append("expected: " + json.dumps(want))
    return problems


def run_checks(lake: Path, expected_path: Path) -> int:
    expected = json.loads(expected_path.read_text())
    found = queries()
    missing, unknown = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
    if missing or unknown:
        print(f"queries without expectations: {missing}; expectations without queries: {unknown}")
        return 1
    con = connect(lake)
    passed = failed = 0
    for name, sql in found.items():
        try:
            problems = check(con, name, sql, expected[name])
        except duckdb.Error as e:
            problems = [f"{type(e).__name__}: {e}"]
        if problems:
            failed += 1
            print(f"FAIL {name}")
            for p in problems:
                print(f"    {p}")
        else:
            passed += 1
            print(f"ok   {name} ({len(expected[name]['rows'])} rows)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def run_bench(lakes: list[Path], repeat: int, only: str | None, params: list[str]) -> int:
    """Times each query on each lake, alternating lakes run by run so that load from anything
    else on the machine falls on both alike; prints one JSON line per query and lake."""
    cons = [connect(lake) for lake in lakes]
    for name, sql in queries(only).items():
        times: list[list[float]] = [[] for _ in lakes]
        for con in cons:
            con.execute(sql, params).fetchall()  # warm-up: file listing and metadata caches
        for _ in range(repeat):
            for i, con in enumerate(cons):
                started = time.perf_counter()
                con.execute(sql, params).fetchall()
                times[i].append((time.perf_counter() - started) * 1000)
        for lake, t in zip(lakes, times):
            print(json.dumps({"query": name, "lake": str(lake), "median_ms": round(statistics.median(t), 3),
                              "min_ms": round(min(t), 3), "runs": repeat}))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", type=Path, required=True, help="local copy of the lake bucket")
    parser.add_argument("--expected", type=Path, help="expected answers (JSON); checks every query")
    parser.add_argument("--bench", type=int, metavar="N", help="time each query N times instead")
    parser.add_argument("--against", type=Path, action="append", default=[],
                        help="with --bench: another lake copy, timed alternately with --lake")
    parser.add_argument("--only", help="with --bench: one query (file stem)")
    parser.add_argument("--params", nargs="*", default=[], help="with --bench: the query parameters")
    args = parser.parse_args(argv)
    if args.bench:
        return run_bench([args.lake, *args.against], args.bench, args.only, args.params)
    if args.expected is None:
        parser.error("--expected or --bench is required")
    return run_checks(args.lake, args.expected)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
