#!/usr/bin/env python3
"""Run every PromQL query of the Prometheus dashboards against a live Prometheus.

    python3 grafana/tests/query_all_panels.py [--url http://127.0.0.1:9090] [--window 1m]
                                               [--ignore REGEX] [--dashboard NAME] [--strict-nan]

Meant to be run right after a load run (scripts/prometheus.sh up + the pipeline + load): each
panel expression (Grafana variables substituted: $__rate_interval/$__interval/$__range -> the
window, other variables such as $shard -> .*) and each Prometheus template-variable query runs as
an instant query. Also lists metric names the dashboards reference that do not exist in
Prometheus at all, so a query that falls back to `or vector(0)` (rare-event counters such as
DynamoDB retries) cannot silently hide a metric that was never exported; that list is a warning
unless --strict-metrics.

Exit status: 0 every query returned data; 1 some returned no data (listed at the end), or with
--strict-metrics a referenced metric is missing; 2 Prometheus unreachable / bad arguments.
Not collected by pytest (file name does not start with test_). Standard library only.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dashlib import (  # noqa: E402
    PROMETHEUS_UID,
    load_dashboards,
    metric_names,
    prometheus_queries,
    prometheus_variable_queries,
    substitute_variables,
    variable_query_to_promql,
)


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def instant_query(base: str, expr: str, timeout: float) -> dict:
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:  # 400/422 carry a JSON error body
        try:
            return json.load(e)
        except Exception:
            return {"status": "error", "error": f"HTTP {e.code}"}


def classify(resp: dict) -> tuple[str, str]:
    """-> (OK|NAN|EMPTY|ERROR, detail)"""
    if resp.get("status") != "success":
        return "ERROR", resp.get("error", "unknown error")
    data = resp["data"]
    if data["resultType"] == "scalar":
        values = [data["result"][1]]
    elif data["resultType"] == "vector":
        values = [s["value"][1] for s in data["result"]]
    else:  # matrix / string: not expected for instant queries of panels
        values = [v[1] for s in data["result"] for v in s.get("values", [])]
    if not values:
        return "EMPTY", "no series"
    finite = [v for v in values if not math.isnan(float(v))]
    if not finite:
        return "NAN", f"{len(values)} series, all NaN (no observations in the window?)"
    shown = ", ".join(f"{float(v):.4g}" for v in finite[:4]) + (" ..." if len(finite) > 4 else "")
    return "OK", f"{len(values)} series: {shown}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:9090", help="Prometheus base URL (loopback only)")
    ap.add_argument("--window", default="1m", help="value for $__rate_interval/$__interval/$__range (default 1m)")
    ap.add_argument("--dashboard", action="append", help="only this dashboard file (repeatable)")
    ap.add_argument("--ignore", help="regex: skip queries/metrics whose panel title, expr or name matches")
    ap.add_argument("--strict-nan", action="store_true", help="count all-NaN results as failures")
    ap.add_argument("--strict-metrics", action="store_true",
                    help="count referenced metrics that do not exist in Prometheus as failures")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()

    if not is_loopback(args.url):
        print(f"refusing to query {args.url}: only loopback Prometheus instances are allowed", file=sys.stderr)
        return 2
    ignore = re.compile(args.ignore) if args.ignore else None

    try:
        with urllib.request.urlopen(args.url.rstrip("/") + "/-/ready", timeout=args.timeout) as r:
            r.read()
    except (urllib.error.URLError, OSError) as e:
        print(f"Prometheus at {args.url} is not reachable/ready: {e}", file=sys.stderr)
        return 2

    checks = []  # (dashboard, where, expr)
    for name, dashboard in sorted(load_dashboards().items()):
        if args.dashboard and name not in args.dashboard:
            continue
        for title, ref, expr in prometheus_queries(dashboard):
            checks.append((name, f"{title} [{ref}]", substitute_variables(expr, args.window)))
        for var, query in prometheus_variable_queries(dashboard):
            checks.append((name, f"variable ${var}", substitute_variables(variable_query_to_promql(query), args.window)))
    if not checks:
        print("no Prometheus queries found (datasource uid %r)" % PROMETHEUS_UID, file=sys.stderr)
        return 2

    failures, warnings, skipped = [], [], 0
    referenced: dict[str, list[str]] = {}
    print(f"Querying {len(checks)} expressions at {args.url} (window {args.window})\n")
    for dash, where, expr in checks:
        if ignore and (ignore.search(where) or ignore.search(expr)):
            skipped += 1
            print(f"SKIP   {dash} :: {where}")
            continue
        for m in metric_names(expr):
            referenced.setdefault(m, []).append(f"{dash} :: {where}")
        status, detail = classify(instant_query(args.url, expr, args.timeout))
        print(f"{status:<6} {dash} :: {where}\n       {expr}\n       -> {detail}")
        if status in ("EMPTY", "ERROR") or (status == "NAN" and args.strict_nan):
            failures.append((dash, where, expr, status, detail))
        elif status == "NAN":
            warnings.append((dash, where, expr, status, detail))

    # Every referenced metric must exist (catches `... or vector(0)` hiding an unexported metric).
    missing = []
    for metric in sorted(referenced):
        if ignore and ignore.search(metric):
            continue
        status, _ = classify(instant_query(args.url, f'count({{__name__="{metric}"}})', args.timeout))
        if status != "OK":
            missing.append(metric)

    print()
    if warnings:
        print(f"{len(warnings)} queries returned only NaN (rates were zero in the last {args.window}):")
        for dash, where, expr, _, _ in warnings:
            print(f"  - {dash} :: {where}: {expr}")
    if missing:
        kind = "FAIL" if args.strict_metrics else "warning"
        print(f"{kind}: {len(missing)} metrics referenced by the dashboards do not exist in Prometheus"
              " (never exported, or the event never happened):")
        for metric in missing:
            print(f"  - {metric}  (used by {referenced[metric][0]}"
                  + (f" and {len(referenced[metric]) - 1} more" if len(referenced[metric]) > 1 else "") + ")")
    if failures:
        print(f"{len(failures)} of {len(checks) - skipped} queries returned no data:")
        for dash, where, expr, status, detail in failures:
            print(f"  - [{status}] {dash} :: {where}: {expr}  ({detail})")
    ok = len(checks) - skipped - len(failures)
    print(f"\nqueries: {ok} with data, {len(failures)} without, {skipped} skipped; "
          f"metrics: {len(referenced) - len(missing)} present, {len(missing)} missing")
    return 1 if failures or (missing and args.strict_metrics) else 0


if __name__ == "__main__":
    sys.exit(main())
