#!/usr/bin/env python3
"""The lake before and after `make demo` compacts it: files per hour partition, their median size,
and the answers of every Athena example query (run with DuckDB, athena/run_queries.py), which
compaction must not change.

    .local/venv/bin/python scripts/demo_lake.py snapshot --since 2024-05-01T10 --dir DIR --name before
    .local/venv/bin/python scripts/demo_lake.py compare DIR/before.json DIR/after.json

`snapshot` lists the hour partitions of $LAKE_BUCKET from the hour --since to the current one,
copies their objects into DIR/NAME/ (the bucket's key layout), runs every query over the first
and last day, prints the files table and writes DIR/NAME.json. `compare` prints both tables side
by side and exits 1 when any query's answer differs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import sys
from pathlib import Path

import pylib

ROOT = Path(__file__).resolve().parents[1]


def hours_since(since: str, now: dt.datetime) -> list[str]:
    """The partition paths `dt=YYYY-MM-DD/hour=HH` from the hour `since` (YYYY-MM-DDTHH, UTC) to
    `now`'s, oldest first."""
    start = dt.datetime.strptime(since, "%Y-%m-%dT%H").replace(tzinfo=dt.timezone.utc)
    end = now.astimezone(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    out = []
    while start <= end:
        out.append(start.strftime("dt=%Y-%m-%d/hour=%H"))
        start += dt.timedelta(hours=1)
    return out


def partition_stats(listing: list[tuple[str, int]]) -> dict[str, dict[str, int]]:
    """Per `events/` hour partition: its Parquet files, their median and total size in bytes.
    `listing` is (key, size) pairs; objects that are not data files (Athena skips names starting
    with `_` or `.`) do not count."""
    sizes: dict[str, list[int]] = {}
    for key, size in listing:
        parts = key.split("/")
        name = parts[-1]
        if len(parts) != 4 or parts[0] != "events" or not name.endswith(".parquet") or name[0] in "_.":
            continue
        sizes.setdefault(f"{parts[1]}/{parts[2]}", []).append(size)
    return {
        p: {"files": len(s), "median_bytes": int(statistics.median(s)), "total_bytes": sum(s)}
        for p, s in sorted(sizes.items())
    }


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def files_table(before: dict, after: dict | None = None) -> list[str]:
    """The files table of one snapshot, or of two side by side."""
    lines = []
    for p in sorted(set(before) | set(after or {})):
        b = before.get(p, {"files": 0, "median_bytes": 0})
        line = f"  {p:<26} {b['files']:>6} files, median {human(b['median_bytes']):>10}"
        if after is not None:
            a = after.get(p, {"files": 0, "median_bytes": 0})
            line += f"  ->  {a['files']:>4} files, median {human(a['median_bytes']):>10}"
        lines.append(line)
    return lines or ["  (no partitions)"]


def same(a, b) -> bool:
    """Equal answers, floats to 1e-9 relative: a sum of doubles over other files may be added in
    another order."""
    if isinstance(a, float) or isinstance(b, float):
        numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
        return numbers and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def differing_answers(before: dict, after: dict) -> list[str]:
    """The queries whose answers differ between two snapshots (a query in only one counts)."""
    return sorted(q for q in set(before) | set(after) if not (q in before and q in after and same(before[q], after[q])))


def run_queries(lake: Path, days: list[str]) -> dict:
    sys.path.insert(0, str(ROOT / "athena"))
    import run_queries as rq

    con = rq.connect(lake)
    params = [days[0], days[-1]]
    answers = {}
    for name, sql in rq.queries().items():
        cursor = con.execute(sql, params)
        answers[name] = {
            "columns": [d[0] for d in cursor.description],
            "rows": [[rq.normal(v) for v in row] for row in cursor.fetchall()],
        }
    return answers


def snapshot(since: str, out_dir: Path, name: str) -> dict:
    env = pylib.env_sh()
    bucket = env["LAKE_BUCKET"]
    s3 = pylib.local_client("s3", env["AWS_ENDPOINT_URL_S3"], s3={"addressing_style": "path"})
    hours = hours_since(since, dt.datetime.now(dt.timezone.utc))
    lake = out_dir / name
    listing = []
    for hour in hours:
        for root in ("events", "dead-letter"):
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{root}/{hour}/"):
                for obj in page.get("Contents", []):
                    listing.append((obj["Key"], obj["Size"]))
                    target = lake / obj["Key"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, obj["Key"], str(target))
    stats = partition_stats(listing)
    days = sorted({h.split("/")[0].removeprefix("dt=") for h in hours})
    result = {"partitions": stats, "answers": run_queries(lake, days) if stats else {}}
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    snap = sub.add_parser("snapshot", help="files per partition and the queries' answers, now")
    snap.add_argument("--since", required=True, help="first hour, YYYY-MM-DDTHH (UTC)")
    snap.add_argument("--dir", type=Path, required=True)
    snap.add_argument("--name", required=True)
    cmp = sub.add_parser("compare", help="two snapshots side by side; exit 1 if an answer differs")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "snapshot":
        args.dir.mkdir(parents=True, exist_ok=True)
        result = snapshot(args.since, args.dir, args.name)
        print(f"Lake partitions ({args.name})")
        print("\n".join(files_table(result["partitions"])))
        return 0
    before, after = (json.loads(p.read_text()) for p in (args.before, args.after))
    print("Lake partitions, before -> after compaction")
    print("\n".join(files_table(before["partitions"], after["partitions"])))
    differ = differing_answers(before["answers"], after["answers"])
    if differ:
        print(f"  DuckDB: the answers of {', '.join(differ)} changed with compaction")
        return 1
    print(f"  DuckDB: all {len(before['answers'])} Athena example queries give the same answers before and after")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
