#!/usr/bin/env python3
"""What the load test's verifier does not check, for `make test-browser`: that the stores hold the
events the page created and nothing else (no event from before consent, none from the forbidden
origin), each with the site it was sent for.

  check_stores.py OUT     OUT/created.ndjson (event id, type and site of each event the page
                          created) and OUT/forbidden.json from scripts/browser/run.mjs;
                          env: STREAM_NAME LAKE_BUCKET DYNAMODB_TABLE DATABASE_URL
  check_stores.py --delete  deletes this run's stream, table, bucket and secret (the same env,
                          plus DATABASE_SECRET_NAME)

The `site` column is checked in every store that has it (DynamoDB attribute, lake column,
PostgreSQL column of event_type_counts); a store without it is reported, not failed.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pylib import env_sh, local_client  # noqa: E402

ENV = env_sh()
REGION = ENV.get("AWS_REGION", "us-east-1")


def clients():
    return (
        local_client("kinesis", ENV["AWS_ENDPOINT_URL_KINESIS"], region=REGION),
        local_client("dynamodb", ENV["AWS_ENDPOINT_URL_DYNAMODB"], region=REGION),
        local_client("s3", ENV["AWS_ENDPOINT_URL_S3"], region=REGION, s3={"addressing_style": "path"}),
        local_client("secretsmanager", ENV["AWS_ENDPOINT_URL_SECRETS_MANAGER"], region=REGION),
    )


def delete() -> int:
    kinesis, ddb, s3, sm = clients()
    bucket = ENV["LAKE_BUCKET"]

    def empty_bucket():
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=bucket)

    status = 0
    for call in (
        lambda: kinesis.delete_stream(StreamName=ENV["STREAM_NAME"]),
        lambda: ddb.delete_table(TableName=ENV["DYNAMODB_TABLE"]),
        empty_bucket,
        lambda: sm.delete_secret(SecretId=ENV["DATABASE_SECRET_NAME"], ForceDeleteWithoutRecovery=True),
    ):
        try:
            call()
        except (ClientError, KeyError) as e:
            print(f"check_stores: cleanup: {e}", file=sys.stderr)
            status = 1
    return status


def psql(sql: str) -> str:
    out = subprocess.run(["psql", "-w", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql, ENV["DATABASE_URL"]],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"check_stores: psql {sql!r}: {out.stderr.strip()}")
    return out.stdout.strip()


def dynamo_items(ddb) -> list[dict]:
    items = []
    for page in ddb.get_paginator("scan").paginate(TableName=ENV["DYNAMODB_TABLE"]):
        items += page["Items"]
    return items


def lake_rows(s3) -> tuple[list[str], list[str | None] | None]:
    """(event_id of every lake row, site of every row or None without a site column)."""
    import duckdb

    bucket = ENV["LAKE_BUCKET"]
    with tempfile.TemporaryDirectory() as tmp:
        n = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="events/"):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(".parquet"):
                    s3.download_file(bucket, obj["Key"], f"{tmp}/{n}.parquet")
                    n += 1
        if n == 0:
            return [], None
        con = duckdb.connect()
        files = f"{tmp}/*.parquet"
        columns = [r[0] for r in con.execute(f"describe select * from read_parquet('{files}', union_by_name=true)").fetchall()]
        site = "site" if "site" in columns else "null"
        rows = con.execute(f"select event_id::varchar, {site} from read_parquet('{files}', union_by_name=true)").fetchall()
        return [r[0] for r in rows], ([r[1] for r in rows] if site == "site" else None)


def main(out: Path) -> int:
    rows = [json.loads(line) for line in (out / "created.ndjson").read_text().splitlines() if line.strip()]
    site_of = {r["ack"]: r["site"] for r in rows}
    forbidden = set(json.loads((out / "forbidden.json").read_text()))
    want = set(site_of)
    per_site: dict[str, int] = {}
    for s in site_of.values():
        per_site[s] = per_site.get(s, 0) + 1
    problems: list[str] = []
    notes: list[str] = []
    _, ddb, s3, _ = clients()

    def same_set(store: str, ids: list[str]) -> None:
        got = set(ids)
        if got != want:
            problems.append(f"{store}: {len(got - want)} events the page did not create, {len(want - got)} missing")
        if got & forbidden:
            problems.append(f"{store}: {len(got & forbidden)} events of the forbidden origin")
        if len(ids) != len(got):
            problems.append(f"{store}: {len(ids) - len(got)} repeated rows")

    def sites(store: str, ids: list[str], values: list | None) -> None:
        if values is None:
            notes.append(f"{store} has no site column")
            return
        wrong = [(i, v) for i, v in zip(ids, values) if v != site_of.get(i)]
        if wrong:
            problems.append(f"{store}: {len(wrong)} rows with another site than the page sent them for, e.g. {wrong[0]}")

    items = dynamo_items(ddb)
    item_ids = [i["event_id"]["S"] for i in items]
    same_set("dynamodb", item_ids)
    has = any("site" in i for i in items)
    sites("dynamodb", item_ids, [i.get("site", {}).get("S") for i in items] if has else None)

    ids, lake_sites = lake_rows(s3)
    same_set("lake", ids)
    sites("lake", ids, lake_sites)

    seen = psql("select event_id::text from seen_events").split()
    same_set("postgresql seen_events", seen)
    total = int(psql("select coalesce(sum(event_count), 0) from event_type_counts"))
    if total != len(want):
        problems.append(f"postgresql event_type_counts: {total} events counted, the page created {len(want)}")
    has_site = psql("select count(*) from information_schema.columns "
                    "where table_name = 'event_type_counts' and column_name = 'site'") == "1"
    if has_site:
        counted = {s: int(n) for s, n in (line.split("|") for line in psql(
            "select coalesce(site, '<null>'), sum(event_count) from event_type_counts group by 1").splitlines())}
        if counted != per_site:
            problems.append(f"postgresql event_type_counts per site {counted}, the page created {per_site}")
    else:
        notes.append("postgresql event_type_counts has no site column")

    for p in problems:
        print(f"check_stores: FAILED: {p}")
    print(f"check_stores: {'FAILED' if problems else 'ok'}: dynamodb {len(items)}, lake {len(ids)}, seen_events "
          f"{len(seen)}, counted {total}; created {len(want)} {per_site}, forbidden {len(forbidden)} (none stored)"
          + (f"; {'; '.join(notes)}" if notes else ""))
    print(f"check_stores: site checked in {3 - len(notes)} of 3 stores")
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--delete"]:
        sys.exit(delete())
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
