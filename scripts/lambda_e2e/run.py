"""`make lambda-e2e`: the bootstrap binaries of the Lambda zips, under cargo-lambda's runtime
emulator, against the local stack. See scripts/lambda_e2e/__init__.py for the steps."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pylib import CARGO_TARGET, HOST, ROOT, env_sh, local_client, run

from . import emf, events, producer, secure_db
from .functions import Emulator, Function, free_port, port_open

FUNCTIONS = ("producer-api", "stream-consumer", "compactor", "forget")
DATABASE = "analytics_lambda_e2e"
ESM_MAX_PAYLOAD = 6 * 1024 * 1024  # a synchronous invocation's payload limit
ELF_MACHINE = {"x86_64": 0x3E, "aarch64": 0xB7, "arm64": 0xB7}
OUT = ROOT / "bench" / "out" / "lambda-e2e"
SEED_TYPE = "e2e_closed_hour"


def say(msg: str) -> None:
    print(f"lambda-e2e: {msg}" if not msg.startswith("  ") else msg, flush=True)


class Failed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


# ------------------------------------------------------------------------------------------------
# Set-up


def bootstraps(bin_dir: str | None, scratch: Path) -> dict[str, Path]:
    """function -> bootstrap executable: <bin_dir>/<function> when given, else the `bootstrap`
    of target/lambda/<function>/bootstrap.zip, unzipped (what would be deployed)."""
    out = {}
    for fn in FUNCTIONS:
        if bin_dir:
            path = Path(bin_dir) / fn
            check(path.is_file() and os.access(path, os.X_OK), f"{path}: no such executable")
        else:
            zip_path = ROOT / "target" / "lambda" / fn / "bootstrap.zip"
            check(zip_path.is_file(), f"{zip_path.relative_to(ROOT)} is missing: run `make package` first "
                                      f"(or give --bin-dir DIR holding {', '.join(FUNCTIONS)})")
            dest = scratch / fn
            dest.mkdir(parents=True)
            with zipfile.ZipFile(zip_path) as z:
                z.extractall(dest)
            path = dest / "bootstrap"
            path.chmod(0o755)
        head = path.read_bytes()[:20]
        machine = os.uname().machine
        check(head[:4] == b"\x7fELF", f"{path} is not an ELF executable")
        want = ELF_MACHINE.get(machine)
        got = int.from_bytes(head[18:20], "little")
        check(want is None or got == want,
              f"{path} is built for another architecture (ELF machine {got:#x}) than this {machine} host: "
              f"build the zips for this machine (make package ARCH={'x86_64' if machine == 'x86_64' else 'arm64'})")
        out[fn] = path
    return out


def cargo_lambda() -> str:
    exe = os.environ.get("CARGO_LAMBDA") or str(ROOT / ".local" / "venv" / "bin" / "cargo-lambda")
    check(shutil.which(exe) is not None, f"cargo-lambda not found at {exe} (make package installs it; or set CARGO_LAMBDA)")
    return exe


def psql(sql: str, database: str = "postgres") -> str:
    out = run(["psql", "-w", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-X", "-v", "ON_ERROR_STOP=1",
               "-Atqc", sql, database])
    check(out.returncode == 0, f"psql {sql!r}: {out.stderr.strip()}")
    return out.stdout.strip()


class Stack:
    """This run's own resources on the shared local stack."""

    def __init__(self, base_env: dict[str, str], shards: int):
        suffix = f"{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.stream = f"lambda-e2e-{suffix}"
        self.bucket = f"lambda-e2e-{suffix}"
        self.table = f"lambda-e2e-{suffix}"
        self.database_url = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
        self.region = base_env.get("AWS_REGION", "us-east-1")
        self.aws_env = {k: v for k, v in base_env.items() if k.startswith("AWS_")}
        out = run([sys.executable, "scripts/bootstrap_resources.py"], env={
            **os.environ, **self.aws_env, "STREAM_NAME": self.stream, "LAKE_BUCKET": self.bucket,
            "DYNAMODB_TABLE": self.table, "STREAM_SHARDS": str(shards),
            "DATABASE_SECRET_NAME": f"lambda-e2e/{suffix}",
        })
        check(out.returncode == 0, f"creating the resources failed:\n{out.stdout}{out.stderr}")
        self.kinesis = local_client("kinesis", base_env["AWS_ENDPOINT_URL_KINESIS"], region=self.region)
        self.s3 = local_client("s3", base_env["AWS_ENDPOINT_URL_S3"], region=self.region, s3={"addressing_style": "path"})
        self.dynamodb = local_client("dynamodb", base_env["AWS_ENDPOINT_URL_DYNAMODB"], region=self.region)
        self.secrets = local_client("secretsmanager", base_env["AWS_ENDPOINT_URL_SECRETS_MANAGER"], region=self.region)
        self.secret = f"lambda-e2e/{suffix}"

    def fresh_database(self) -> None:
        psql(f"drop database if exists {DATABASE} with (force)")
        psql(f"create database {DATABASE}")

    def function_env(self, fn: str) -> dict[str, str]:
        """What Terraform sets on the function (README's Configuration), locally."""
        common = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOG_FORMAT": "json",
                  "RUST_LOG": os.environ.get("LAMBDA_E2E_RUST_LOG", "info"), **self.aws_env}
        if fn == "producer-api":
            # Terraform sets the sites file's text (SITES_JSON) on the function.
            return {**common, "STREAM_NAME": self.stream, "SITES_JSON": (ROOT / "config" / "sites.json").read_text()}
        if fn == "stream-consumer":
            return {**common, "LAKE_BUCKET": self.bucket, "DYNAMODB_TABLE": self.table,
                    "DATABASE_URL": self.database_url, "DATABASE_MIGRATOR_URL": self.database_url}
        if fn == "forget":
            return {**common, "LAKE_BUCKET": self.bucket, "DYNAMODB_TABLE": self.table,
                    "DATABASE_URL": self.database_url}
        return {**common, "LAKE_BUCKET": self.bucket, "DATABASE_URL": self.database_url}

    def visitor_items(self, site: str, anonymous_id: str) -> tuple[int, int]:
        """The table's items of one visitor of one site, and everyone else's: a Scan of the whole
        (small) table, as the table has no index (forget finds the items through the lake)."""
        mine = others = 0
        start: dict = {}
        while True:
            page = self.dynamodb.scan(TableName=self.table, ProjectionExpression="#a, #s",
                                      ExpressionAttributeNames={"#a": "anonymous_id", "#s": "site"},
                                      ConsistentRead=True, **start)
            for item in page["Items"]:
                if item.get("anonymous_id") == {"S": anonymous_id} and item.get("site") == {"S": site}:
                    mine += 1
                else:
                    others += 1
            if "LastEvaluatedKey" not in page:
                return mine, others
            start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}

    def delete(self) -> None:
        for call in (
            lambda: self.kinesis.delete_stream(StreamName=self.stream),
            lambda: self.dynamodb.delete_table(TableName=self.table),
            lambda: self.secrets.delete_secret(SecretId=self.secret, ForceDeleteWithoutRecovery=True),
            self._delete_bucket,
        ):
            try:
                call()
            except Exception as e:  # best effort: the emulators lose everything on restart anyway
                print(f"lambda-e2e cleanup: {e}", file=sys.stderr)

    def _delete_bucket(self) -> None:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
        self.s3.delete_bucket(Bucket=self.bucket)

    def read_stream(self) -> dict[str, list[dict]]:
        """Every record on the stream, per shard in sequence order (GetRecords from TRIM_HORIZON)."""
        shards = self.kinesis.list_shards(StreamName=self.stream)["Shards"]
        out = {}
        for shard in shards:
            sid = shard["ShardId"]
            it = self.kinesis.get_shard_iterator(StreamName=self.stream, ShardId=sid,
                                                 ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            records: list[dict] = []
            empty = 0
            while it and empty < 2:
                page = self.kinesis.get_records(ShardIterator=it, Limit=10000)
                records += page["Records"]
                empty = 0 if page["Records"] else empty + 1
                it = page.get("NextShardIterator")
            out[sid] = records
        return out

    def dead_letters(self) -> list[dict]:
        rows = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="dead-letter/"):
            for obj in page.get("Contents", []):
                body = self.s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                rows += [json.loads(line) for line in body.splitlines() if line.strip()]
        return rows


# ------------------------------------------------------------------------------------------------
# Records straight onto the stream: a closed hour's events and poison


def seed_records(count: int, hours_ago: int, event_type: str = SEED_TYPE) -> list[bytes]:
    """Producer-shaped records ({"v":1,"event":…}) received `hours_ago` hours ago, so their lake
    partition is a closed hour the compactor takes (the lake is partitioned by received_at,
    which the producer stamps; only records written with an old stamp land in a closed hour)."""
    at = datetime.now(timezone.utc) - timedelta(hours=hours_ago)
    out = []
    for i in range(count):
        received = at + timedelta(milliseconds=i)
        stamp = lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"  # noqa: E731
        out.append(json.dumps({"v": 1, "event": {
            "event_id": str(uuid.uuid4()), "event_type": event_type,
            "occurred_at": stamp(received - timedelta(seconds=1)), "received_at": stamp(received),
            "anonymous_id": f"anon-{i}", "url": "https://shop.example/archive",
        }}, separators=(",", ":")).encode())
    return out


POISON = [
    ("not_json", b"this is not json {"),
    ("unknown_version", json.dumps({"v": 2, "event": {"event_type": "page_view"}}).encode()),
    ("invalid_event", json.dumps({"v": 1, "event": {"event_id": str(uuid.uuid4()), "event_type": "Not Valid",
                                                     "occurred_at": "2026-01-01T00:00:00.000Z",
                                                     "received_at": "2026-01-01T00:00:00.000Z"}}).encode()),
]


def put_direct(stack: Stack, datas: list[bytes]) -> None:
    for i in range(0, len(datas), 500):
        chunk = datas[i:i + 500]
        out = stack.kinesis.put_records(StreamName=stack.stream, Records=[
            {"Data": d, "PartitionKey": str(uuid.uuid4())} for d in chunk])
        check(out.get("FailedRecordCount", 0) == 0, f"PutRecords failed for {out['FailedRecordCount']} records")


def esm_batches(stack: Stack, per_shard: dict[str, list[dict]], batch_size: int) -> list[tuple[str, list[dict]]]:
    """Per shard, in sequence order, batches of at most `batch_size` records and 6 MB of payload:
    what the event source mapping invokes with."""
    batches = []
    for sid, records in per_shard.items():
        current: list[dict] = []
        for r in records:
            rec = events.kinesis_record(sid, r, stack.stream, stack.region)
            if current and (len(current) >= batch_size
                            or events.payload_size(events.kinesis_event(current + [rec])) > ESM_MAX_PAYLOAD):
                batches.append((sid, current))
                current = []
            current.append(rec)
        if current:
            batches.append((sid, current))
    return batches


def batch_ok(response: tuple[int, object, float], what: str) -> float:
    status, body, seconds = response
    check(status == 200, f"{what}: invoke answered {status}: {body}")
    check(body == {"batchItemFailures": []}, f"{what}: expected {{\"batchItemFailures\": []}}, got {body}")
    return seconds


# ------------------------------------------------------------------------------------------------
# The steps


def run_producer(emu: Emulator, bins: dict[str, Path], stack: Stack, fns: list[Function]) -> dict[str, str]:
    """Every case as v1 and v2; 4xx bodies equal the local server's. Returns event_id -> type."""
    rng = random.Random(18)
    env = stack.function_env("producer-api")
    fn = Function(emu, "producer-api", bins["producer-api"], env)
    fns.append(fn)
    fn.wait_ready()
    # The same bootstrap without AWS_LAMBDA_RUNTIME_API is the local server.
    port, metrics_port = free_port(), free_port()
    server = subprocess.Popen([str(bins["producer-api"])], env={**env, "BIND_ADDR": f"127.0.0.1:{port}",
                                                             "METRICS_ADDR": f"127.0.0.1:{metrics_port}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    acks: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            check(server.poll() is None and time.monotonic() < deadline, "the producer's local server did not start")
            time.sleep(0.05)
        for case in producer.cases(rng):
            local = producer.local_request(port, case) if case.compare_local else None
            for version in (1, 2):
                status, payload, _ = emu.invoke("producer-api", producer.proxy_event(version, case))
                check(status == 200 and isinstance(payload, dict) and "statusCode" in payload,
                      f"producer v{version} {case.name}: invoke answered {status}: {str(payload)[:300]}")
                http_status, headers, raw = events.parse_proxy_response(payload)
                body = json.loads(raw) if raw else None
                check(http_status == case.status,
                      f"producer v{version} {case.name}: HTTP {http_status}, expected {case.status}: {raw[:300]!r}")
                check(headers.get("content-type", "").startswith("application/json"),
                      f"producer v{version} {case.name}: content-type {headers.get('content-type')}")
                if case.status == 202:
                    if case.sent is not None:
                        # A v1 and a v2 request of the same events: same client IDs, one event each.
                        acks.update(producer.acked_types(case, body))
                if local is not None:
                    check(local[0] == http_status and json.loads(local[1]) == body,
                          f"producer v{version} {case.name}: Lambda {http_status} {body} != local server "
                          f"{local[0]} {local[1][:300]!r}")
                say(f"  producer v{version} {case.name:<30} {http_status} {json.dumps(body)[:90]}")
    finally:
        server.terminate()
        server.wait(timeout=10)
    return acks


def run_consumer(emu: Emulator, side: Emulator, bins: dict[str, Path], stack: Stack, fns: list[Function],
                 args, timings: dict) -> dict:
    per_shard = stack.read_stream()
    total = sum(len(r) for r in per_shard.values())
    batches = esm_batches(stack, per_shard, args.batch_size)
    say(f"consumer: {total} records read back from {len(per_shard)} shards -> {len(batches)} batches "
        f"of <= {args.batch_size} records")
    check(len(batches) >= args.cold_starts + 1, f"only {len(batches)} batches for {args.cold_starts} cold starts")
    failing = batches[-1]  # new records, held back for the failure case
    first, rest = batches[:args.cold_starts], batches[args.cold_starts:-1]

    env = stack.function_env("stream-consumer")
    if not args.lambda_migrates:
        # Until the consumer migrates at init, the schema is applied by the same binary's `migrate`.
        env_migrate = {k: v for k, v in env.items() if k != "DATABASE_MIGRATOR_URL"}
        out = run([str(bins["stream-consumer"]), "migrate"], env=env_migrate, timeout=120)
        check(out.returncode == 0, f"stream-consumer migrate failed: {out.stdout}{out.stderr}")
    # Cold starts, all at once, against the fresh database.
    pool = [Function(emu, "stream-consumer", bins["stream-consumer"], env, tag=f"stream-consumer#{i}")
            for i in range(args.cold_starts)]
    fns.extend(pool)
    with ThreadPoolExecutor(len(pool)) as ex:
        inits = list(ex.map(lambda f: f.wait_ready(60), pool))
    migrations = int(psql("select count(*) from _sqlx_migrations where success", DATABASE) or 0)
    expected_migrations = len(list((ROOT / "schemas" / "migrations").glob("*.sql")))
    check(migrations == expected_migrations,
          f"{migrations} migrations applied in {DATABASE}, expected {expected_migrations}")
    timings["consumer_concurrent_cold_init_s"] = inits
    say(f"consumer: {len(pool)} concurrent cold starts ready, init {min(inits)*1000:.0f}-{max(inits)*1000:.0f} ms; "
        f"{migrations} migrations applied {'by the Lambdas at init' if args.lambda_migrates else 'by `migrate`'}")

    invoke = lambda b: emu.invoke("stream-consumer", events.kinesis_event(b[1]))  # noqa: E731
    with ThreadPoolExecutor(len(first)) as ex:
        firsts = [batch_ok(r, f"first batch {i}") for i, r in enumerate(ex.map(invoke, first))]
    timings["consumer_first_invocation_fresh_db_s"] = firsts
    say(f"consumer: {len(first)} first invocations on the fresh database, one per cold start: "
        f"median {statistics.median(firsts)*1000:.0f} ms, max {max(firsts)*1000:.0f} ms")
    with ThreadPoolExecutor(len(pool)) as ex:
        for i, r in enumerate(ex.map(invoke, rest)):
            batch_ok(r, f"batch {args.cold_starts + i}")
    say(f"consumer: {len(rest)} more batches, each {{\"batchItemFailures\": []}}")

    # Redelivery: the mapping sends an identical batch again (e.g. after a timeout).
    batch_ok(invoke(first[0]), "redelivered batch")
    say(f"consumer: redelivered batch ({len(first[0][1])} records) -> {{\"batchItemFailures\": []}}")

    # A failing batch: the same bootstrap with an unwritable lake, on its own emulator so no
    # stopped process is left waiting for this function's invocations.
    bad = Function(side, "stream-consumer", bins["stream-consumer"],
                   {**env, "LAKE_BUCKET": f"{stack.bucket}-missing", "SINK_BUDGET_MS": "2000"}, tag="stream-consumer#bad")
    fns.append(bad)
    bad.wait_ready(60)
    status, body, _ = side.invoke("stream-consumer", events.kinesis_event(failing[1]))
    first_seq = failing[1][0]["kinesis"]["sequenceNumber"]
    check(status == 200 and body == {"batchItemFailures": [{"itemIdentifier": first_seq}]},
          f"failing batch: expected batchItemFailures [{{itemIdentifier: {first_seq}}}], got {status} {body}")
    say(f"consumer: batch with an unwritable lake -> {json.dumps(body)[:100]} (its first sequence number)")
    bad.stop()
    # The mapping bisects the failed batch and retries each half, then (say, after a timeout) the whole.
    half = len(failing[1]) // 2
    for part, records in (("first", failing[1][:half]), ("second", failing[1][half:])):
        batch_ok(invoke((failing[0], records)), f"bisected {part} half")
        say(f"consumer: bisected {part} half ({len(records)} records) -> {{\"batchItemFailures\": []}}")
    batch_ok(invoke(failing), "whole failed batch redelivered")
    say("consumer: the whole failed batch again -> {\"batchItemFailures\": []}")
    # Also a bisected half of a batch that had succeeded.
    b = rest[0] if rest else first[-1]
    batch_ok(invoke((b[0], b[1][len(b[1]) // 2:])), "bisected half of a delivered batch")
    say(f"consumer: second half of a delivered batch ({len(b[1]) - len(b[1]) // 2} records) -> "
        "{\"batchItemFailures\": []}")
    return {"records": total, "batches": len(batches)}


def run_compactor(emu: Emulator, bins: dict[str, Path], stack: Stack, fns: list[Function], seed_hour: str,
                  seeds: int) -> list:
    fn = Function(emu, "compactor", bins["compactor"], stack.function_env("compactor"))
    fns.append(fn)
    fn.wait_ready(60)
    status, body, seconds = emu.invoke("compactor", events.scheduled_event(), timeout=600)
    check(status == 200 and isinstance(body, dict) and body.get("failed") == [],
          f"compactor (scheduled event): {status} {body}")
    compacted = [c.get("partition") for c in body.get("compacted", [])]
    seeded = [c for c in body.get("compacted", []) if c.get("partition") == seed_hour]
    check(len(seeded) == 1 and seeded[0]["outputs"] >= 1 and seeded[0]["rows_out"] == seeds,
          f"compactor: the seeded closed hour {seed_hour} ({seeds} events) is not compacted into "
          f"{seeds} rows: {body.get('compacted')}")
    say(f"compactor: scheduled event -> {body['partitions']} partitions, compacted {compacted} "
        f"({seeded[0]['files_before']} files, {seeded[0]['rows_in']} rows -> {seeded[0]['rows_out']}) in {seconds:.1f} s")
    # Terraform's EventBridge target sends a constant input instead of the event.
    status, again, _ = emu.invoke("compactor", {"hours_back": 24}, timeout=600)
    check(status == 200 and isinstance(again, dict) and again.get("failed") == [],
          f"compactor ({{hours_back: 24}}): {status} {again}")
    say(f"compactor: {{\"hours_back\": 24}} -> {again['partitions']} partitions, compacted {len(again['compacted'])}")
    return [body, again]


def run_forget(emu: Emulator, bins: dict[str, Path], stack: Stack, fns: list[Function]) -> dict:
    """forget as Terraform runs it: invoked with a request (what an operator sends), then with the
    schedule's empty payload. The visitor is one the producer's events came from."""
    item = stack.dynamodb.scan(TableName=stack.table, FilterExpression="site = :s",
                               ExpressionAttributeValues={":s": {"S": "local-demo"}})["Items"][0]
    visitor = item["anonymous_id"]["S"]
    items, others = stack.visitor_items("local-demo", visitor)
    check(items >= 1, f"forget: no item of {visitor} to erase")
    fn = Function(emu, "forget", bins["forget"], stack.function_env("forget"))
    fns.append(fn)
    fn.wait_ready(60)
    status, body, seconds = emu.invoke("forget", {"request": {"site": "local-demo", "anonymous_id": visitor}},
                                       timeout=600)
    check(status == 200 and isinstance(body, dict) and body.get("errors") == [] and len(body.get("completed", [])) == 1,
          f"forget (request): {status} {body}")
    check(body["dynamo_items_removed"] == items and body["lake_rows_removed"] == items,
          f"forget: {items} events of {visitor}, removed {body['dynamo_items_removed']} items and "
          f"{body['lake_rows_removed']} lake rows")
    left, others_left = stack.visitor_items("local-demo", visitor)
    check(left == 0, f"forget: {left} items of {visitor} left in DynamoDB")
    check(others_left == others, f"forget: other visitors' items went from {others} to {others_left}")
    audit = psql(f"select visitor is null, visitor_sha256 <> '', lake_rows_removed from erasure_requests "
                 f"where id = {int(body['completed'][0])}", DATABASE)
    check(audit == f"t|t|{items}", f"forget: audit row {audit!r}, expected no raw ID, a hash and {items} rows")
    say(f"forget: {{\"request\": …}} -> {items} items and {body['lake_rows_removed']} lake rows of one visitor "
        f"removed ({body['lake_objects_rewritten']} objects rewritten, {body['objects_read']} read) in {seconds:.1f} s; "
        "audit keeps only the hash")
    status, again, _ = emu.invoke("forget", {}, timeout=600)
    check(status == 200 and isinstance(again, dict) and again.get("requests") == 0,
          f"forget (scheduled, nothing pending): {status} {again}")
    say("forget: {} (the schedule's payload) -> nothing pending, nothing removed")
    return {"visitor_events": items, "objects_read": body["objects_read"]}


def verify_table(stack: Stack, ack_log: Path, database_url: str) -> dict[str, tuple[int, int, int, int]]:
    """The verifier over the ack log: per type (acked, lake, DynamoDB, PostgreSQL)."""
    verify = CARGO_TARGET / "debug" / "verify"
    check(verify.is_file(), f"{verify} missing: cargo build -p loadtest --bin verify")
    out = run([str(verify), "--wait", "60", str(ack_log)], timeout=300, env={
        **os.environ, **stack.aws_env, "STREAM_NAME": stack.stream, "LAKE_BUCKET": stack.bucket,
        "DYNAMODB_TABLE": stack.table, "DATABASE_URL": database_url})
    print(out.stdout, end="")
    check(out.returncode == 0, f"verify failed:\n{out.stderr}")
    # The per-type table: "event_type acked lake dynamodb postgres site_hourly", then one line per
    # type (verify itself fails unless site_hourly equals postgres).
    table: dict[str, tuple[int, int, int, int]] = {}
    lines = out.stdout.splitlines()
    header = next((i for i, line in enumerate(lines) if line.split()[:1] == ["event_type"]), None)
    check(header is not None, "no per-type table in verify's output")
    for line in lines[header + 1:]:
        m = re.match(r"^([a-z0-9_]+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", line)
        if m:
            table[m[1]] = tuple(int(x) for x in m.groups()[1:5])
    return table


def run_verify(stack: Stack, ack_log: Path, expected: dict[str, int]) -> dict[str, tuple[int, int, int, int]]:
    """The verifier over the ack log; then per type exactly: expected == lake == DynamoDB == PostgreSQL."""
    table = verify_table(stack, ack_log, stack.database_url)
    pg = dict(line.split("|") for line in psql("select event_type, sum(event_count) from event_type_counts group by event_type", DATABASE).splitlines())
    for t in sorted(set(expected) | set(table)):
        _, lake, dynamo, postgres = table.get(t, (0, 0, 0, 0))
        want = expected.get(t, 0)
        check(want == lake == dynamo == postgres == int(pg.get(t, 0)),
              f"{t}: expected {want}, lake {lake}, dynamodb {dynamo}, postgres {postgres} (event_type_counts {pg.get(t)})")
    return table


SECURE_TYPE = "e2e_secure_db"


def secure_env(stack: Stack, fn: str, cluster: secure_db.TlsCluster, arns: dict[str, str], ca: Path,
               host: str = "localhost") -> dict[str, str]:
    """The function's environment as Terraform sets it on AWS: secrets, not URLs, and a CA bundle."""
    env = {k: v for k, v in stack.function_env(fn).items() if not k.startswith("DATABASE_")}
    env.update({"DATABASE_SECRET_ARN": arns["app"], "DATABASE_HOST": host, "DATABASE_PORT": str(cluster.port),
                "DATABASE_NAME": secure_db.DATABASE, "DATABASE_SSL_ROOT_CERT": str(ca)})
    if fn == "stream-consumer":
        env["DATABASE_MIGRATOR_SECRET_ARN"] = arns["migrator"]
    return env


def refused_init(emu: Emulator, bins: dict[str, Path], env: dict[str, str], tag: str) -> str:
    """Starts a consumer that must fail its init; returns the error it exited with."""
    fn = Function(emu, "stream-consumer", bins["stream-consumer"], env, tag=tag)
    try:
        fn.wait_ready(60)
    except RuntimeError as e:
        return str(e)
    finally:
        fn.stop()
    raise Failed(f"{tag}: the consumer started although the database's certificate should have been refused")


def run_secure_database(emu: Emulator, bins: dict[str, Path], base_env: dict[str, str],
                        fns: list[Function], cleanups: list, batch_size: int) -> str:
    """The database as on AWS (secure_db.py's docstring): TLS verify-full, two roles, rotation."""
    cluster = secure_db.TlsCluster(OUT / "postgres-tls.log")
    cleanups.append(cluster.stop)
    stack = Stack(base_env, shards=1)
    cleanups.append(stack.delete)
    migrator_password, app_password = uuid.uuid4().hex, uuid.uuid4().hex
    cluster.admin(f"CREATE ROLE {secure_db.MIGRATOR} LOGIN CREATEROLE PASSWORD '{migrator_password}'")
    cluster.admin(f"CREATE DATABASE {secure_db.DATABASE} OWNER {secure_db.MIGRATOR}")
    # On RDS the migrator is the master user, whose rds_superuser role may create the extensions
    # RDS ships (hll among them). Here the migrator is a plain role, so the superuser does that one
    # step for it; migration 0005's CREATE EXTENSION IF NOT EXISTS then finds hll and moves on.
    cluster.admin("CREATE EXTENSION IF NOT EXISTS hll", secure_db.DATABASE)
    arns = {}
    for who, user, password in (("migrator", secure_db.MIGRATOR, migrator_password),
                                ("app", secure_db.APPLICATION, app_password)):
        arns[who] = stack.secrets.create_secret(Name=f"{stack.secret}/{who}",
                                                SecretString=secure_db.secret_text(user, password, cluster.port))["ARN"]
    cleanups.append(lambda: [stack.secrets.delete_secret(SecretId=a, ForceDeleteWithoutRecovery=True)
                             for a in arns.values()])
    say(f"secure db: PostgreSQL on 127.0.0.1:{cluster.port}, TLS only (certificate for `localhost` from a CA "
        f"made here), migrator {secure_db.MIGRATOR} owns {secure_db.DATABASE}; both logins in Secrets Manager")

    wrong_ca = refused_init(emu, bins, secure_env(stack, "stream-consumer", cluster, arns, cluster.other_ca[0]),
                            "stream-consumer#wrong-ca")
    check("UnknownIssuer" in wrong_ca or "certificate" in wrong_ca.lower(), f"wrong CA: unexpected error: {wrong_ca[-400:]}")
    wrong_host = refused_init(emu, bins, secure_env(stack, "stream-consumer", cluster, arns, cluster.ca[0], host=HOST),
                              "stream-consumer#wrong-host")
    check("NotValidForName" in wrong_host or "certificate" in wrong_host.lower(),
          f"wrong host: unexpected error: {wrong_host[-400:]}")
    check(cluster.admin("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", secure_db.DATABASE) == "0",
          "a consumer that refused the certificate still created tables")
    say("secure db: a consumer given another CA, and one connecting to 127.0.0.1 (not in the certificate), "
        "both fail their init (verify-full); nothing was created")

    seeds = seed_records(6 * batch_size, hours_ago=2, event_type=SECURE_TYPE)
    put_direct(stack, seeds)
    batches = esm_batches(stack, stack.read_stream(), batch_size)
    consumer = Function(emu, "stream-consumer", bins["stream-consumer"],
                        secure_env(stack, "stream-consumer", cluster, arns, cluster.ca[0]), tag="stream-consumer#tls")
    fns.append(consumer)
    consumer.wait_ready(60)
    migrations = len(list((ROOT / "schemas" / "migrations").glob("*.sql")))
    db = secure_db.DATABASE
    check(cluster.admin("SELECT count(*) FROM _sqlx_migrations WHERE success", db) == str(migrations),
          "the consumer's init did not apply every migration")
    owners = cluster.admin("SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname = 'public'", db)
    check(owners == secure_db.MIGRATOR, f"tables owned by {owners}, expected the migrator only")
    member = cluster.admin(f"SELECT pg_has_role('{secure_db.APPLICATION}', 'analytics_writer', 'member')", db)
    check(member == "t", f"{secure_db.APPLICATION} is not a member of analytics_writer")
    for sql, what in (("CREATE TABLE not_allowed (x int)", "create a table"),
                      ("DELETE FROM _sqlx_migrations", "change the migrations table"),
                      ("ALTER TABLE seen_events ADD COLUMN x int", "alter a table")):
        out = cluster.login(secure_db.APPLICATION, app_password, sql)
        check(out.returncode != 0 and ("permission denied" in out.stderr or "must be owner" in out.stderr),
              f"the application role could {what}: {out.stdout}{out.stderr}")
    ok = cluster.login(secure_db.APPLICATION, app_password, "SELECT count(*) FROM seen_events")
    check(ok.returncode == 0, f"the application role cannot read its tables: {ok.stderr}")
    say(f"secure db: consumer init applied {migrations} migrations as the migrator and created "
        f"{secure_db.APPLICATION} (member of analytics_writer: DML only; DDL refused)")

    half = len(batches) // 2
    redelivered = sum(secure_db.deliver(emu, "stream-consumer", b, check) for _, b in batches[:half])
    _, closed = secure_db.rotate(cluster, stack.secrets, arns["app"])
    say(f"secure db: {half} batches in; application password rotated in PostgreSQL and the secret, "
        f"{closed} open connection(s) closed")
    redelivered += sum(secure_db.deliver(emu, "stream-consumer", b, check) for _, b in batches[half:])
    check(any(secure_db.RENEWED in line for line in consumer.lines),
          "the consumer never read the rotated secret again")
    # A closed connection fails the batch it served (reported, redelivered); the refused login
    # that follows is renewed within the batch.
    check(redelivered <= 1, f"{redelivered} redeliveries after one rotation: the refused login was not renewed "
                            "within its batch")
    say(f"secure db: {len(batches) - half} more batches after the rotation; the consumer read the secret "
        f"again; {redelivered} redelivery(ies) in all")

    compactor = Function(emu, "compactor", bins["compactor"], secure_env(stack, "compactor", cluster, arns, cluster.ca[0]),
                         tag="compactor#tls")
    fns.append(compactor)
    compactor.wait_ready(60)
    secure_db.rotate(cluster, stack.secrets, arns["app"])
    seed_hour = (datetime.now(timezone.utc) - timedelta(hours=2)).strftime("dt=%Y-%m-%d/hour=%H")
    # The compactor read the old password at init: its first login is refused, it reads the
    # secret again and logs in anew within the same run.
    status, body, _ = emu.invoke("compactor", events.scheduled_event(), timeout=600)
    check(status == 200 and isinstance(body, dict) and body.get("failed") == [],
          f"compactor after a rotation: {status} {str(body)[:300]}")
    done = [c for c in body.get("compacted", []) if c.get("partition") == seed_hour]
    rows = done[0]["rows_out"] if done else None
    check(rows == len(seeds), f"compactor after a rotation: {seed_hour} not compacted into {len(seeds)} rows: {done}")
    check(any(secure_db.RENEWED in line for line in compactor.lines), "the compactor never read the rotated secret again")
    say(f"secure db: compactor started before another rotation: read the secret again and compacted "
        f"{seed_hour} into {rows} rows in the same run")

    ack_log = OUT / "acks-secure.ndjson"
    ack_log.write_text("".join(json.dumps({"ack": json.loads(d)["event"]["event_id"], "t": SECURE_TYPE}) + "\n"
                               for d in seeds))
    table = verify_table(stack, ack_log, cluster.url(secure_db.MIGRATOR, migrator_password))
    counted = cluster.admin(f"SELECT sum(event_count) FROM event_type_counts WHERE event_type = '{SECURE_TYPE}'", db)
    got = table.get(SECURE_TYPE, (0, 0, 0, 0))
    check(got == (len(seeds),) * 4 and counted == str(len(seeds)),
          f"secure db: acked/lake/dynamodb/postgres {got}, event_type_counts {counted}, expected {len(seeds)}")
    say(f"secure db: {len(seeds)} events = lake = DynamoDB = PostgreSQL, exactly, across two rotations")
    return f"secure db {len(seeds)} exact over verify-full with 2 rotations"


def bench_init(side: Emulator, bins: dict[str, Path], stack: Stack, starts: int) -> dict[str, list[float]]:
    """Each bootstrap started `starts` times: process start -> first /next request."""
    samples: dict[str, list[float]] = {}
    for fn_name in FUNCTIONS:
        samples[fn_name] = []
        for _ in range(starts):
            fn = Function(side, fn_name, bins[fn_name], stack.function_env(fn_name), tag=f"{fn_name}#bench")
            try:
                samples[fn_name].append(fn.wait_ready(60))
            finally:
                fn.stop()
    return samples


def ms(values: list[float]) -> float | None:
    return round(statistics.median(values) * 1000, 1) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lambda-e2e", description=__doc__)
    parser.add_argument("--bin-dir", help="directory with producer-api, stream-consumer, compactor, forget executables "
                                          "(default: the bootstrap in each target/lambda/<fn>/bootstrap.zip)")
    # Records pack events (a 500-event request is ~6 records), so the run's ~1,100 events are only
    # ~65 records: small batches give the cold starts, the redelivery and the failure case each
    # a batch of their own.
    parser.add_argument("--batch-size", type=int, default=int(os.environ.get("LAMBDA_E2E_BATCH_SIZE") or 4),
                        help="records per consumer invocation, the mapping's BatchSize (default 4)")
    parser.add_argument("--cold-starts", type=int, default=10)
    parser.add_argument("--init-starts", type=int, default=20, help="starts per binary for the init-time medians")
    parser.add_argument("--lambda-migrates", choices=["auto", "yes", "no"],
                        default={"1": "yes", "0": "no"}.get(os.environ.get("LAMBDA_E2E_LAMBDA_MIGRATES", ""), "auto"),
                        help="yes: the consumer Lambda applies the migrations at init, so the cold starts race "
                             "on a schema-less database; no: `stream-consumer migrate` first; auto (default): yes "
                             "when the consumer binary reads DATABASE_MIGRATOR_URL")
    parser.add_argument("--keep", action="store_true", help="keep the stream, bucket, table and database")
    args = parser.parse_args(argv)

    started = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="lambda-e2e-"))
    fns: list[Function] = []
    emulators: list[Emulator] = []
    cleanups: list = []
    stack = None
    try:
        bins = bootstraps(args.bin_dir, scratch)
        say("bootstraps: " + ", ".join(f"{k}={v}" for k, v in bins.items()))
        if args.lambda_migrates == "auto":
            # The consumer that migrates at init takes the migrator's URL from this variable.
            migrates = b"DATABASE_MIGRATOR_URL" in bins["stream-consumer"].read_bytes()
            say(f"migrations: the consumer {'applies them at init' if migrates else 'does not migrate at init'} "
                f"(auto; LAMBDA_E2E_LAMBDA_MIGRATES=0/1 to choose)")
        else:
            migrates = args.lambda_migrates == "yes"
        args.lambda_migrates = migrates
        exe = cargo_lambda()
        base_env = env_sh()
        stack = Stack(base_env, shards=2)
        stack.fresh_database()
        say(f"resources: stream/bucket/table {stack.stream}, database {DATABASE} (dropped and created)")
        emu = Emulator(exe, OUT / "emulator.log")
        side = Emulator(exe, OUT / "emulator-side.log")
        emulators += [emu, side]
        say(f"emulator: cargo lambda watch --only-lambda-apis on 127.0.0.1:{emu.port} (and :{side.port} for the "
            f"failure case and the init benchmark)")

        acks = run_producer(emu, bins, stack, fns)
        ack_log = OUT / "acks.ndjson"
        ack_log.write_text("".join(json.dumps({"ack": i, "t": t}) + "\n" for i, t in acks.items()))
        say(f"producer: {len(acks)} events acknowledged (202 event_ids) -> {ack_log.relative_to(ROOT)}")

        seeds = seed_records(40, hours_ago=2)
        seed_at = datetime.now(timezone.utc) - timedelta(hours=2)
        put_direct(stack, seeds + [p for _, p in POISON])
        say(f"stream: + {len(seeds)} records received 2 h ago ({SEED_TYPE}) and {len(POISON)} poison records, "
            f"put directly")

        timings: dict = {}
        consumed = run_consumer(emu, side, bins, stack, fns, args, timings)
        dead = stack.dead_letters()
        reasons = sorted({(r["shard_id"], r["sequence_number"]): r["reason_code"] for r in dead}.values())
        check(reasons == sorted(r for r, _ in POISON), f"dead-letter reasons {reasons}, expected {[r for r, _ in POISON]}")
        say(f"consumer: poison quarantined in dead-letter/: {', '.join(reasons)}")

        seed_hour = f"dt={seed_at:%Y-%m-%d}/hour={seed_at:%H}"
        run_compactor(emu, bins, stack, fns, seed_hour, len(seeds))

        expected: dict[str, int] = {}
        for t in acks.values():
            expected[t] = expected.get(t, 0) + 1
        expected[SEED_TYPE] = len(seeds)
        table = run_verify(stack, ack_log, expected)
        # After the verifier: erasure removes some acknowledged events from the lake and DynamoDB.
        run_forget(emu, bins, stack, fns)
        # An emulator of its own: the consumers and compactor above still poll theirs, and the
        # emulator hands an invocation to whichever process of that name asks first.
        secure_emu = Emulator(exe, OUT / "emulator-secure.log")
        emulators.append(secure_emu)
        secure = run_secure_database(secure_emu, bins, base_env, fns, cleanups, args.batch_size)

        # EMF: every stdout line of every process of the run (kept in stdout/<process>.log).
        tally = emf.Tally()
        per_fn: dict[str, emf.Tally] = {}
        logs = OUT / "stdout"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir()
        for f in fns:
            (logs / f"{f.tag.replace('#', '-')}.log").write_text("".join(line + "\n" for line in f.lines))
            t = per_fn.setdefault(f.name, emf.Tally())
            for line in f.lines:
                t.add_line(line, f.tag)
        for t in per_fn.values():
            tally.merge(t)
        for name, t in per_fn.items():
            say(f"stdout {name}: {t.emf} EMF lines ({len(t.metrics)} metrics), {t.logs} log lines, {t.text} other")
        check(not tally.invalid, f"{len(tally.invalid)} EMF problems:\n" + "\n".join(tally.invalid[:20]))
        # No process logs an ERROR (the failing-lake consumer's batch failure is a WARN). This is
        # also how a dropped metric shows: the EMF recorder keeps at most 100 values of a
        # histogram per flush and logs an ERROR for each value it drops.
        check(not tally.error_logs, "ERROR log lines: " + "; ".join(
            f"{n}x {m}" for m, n in sorted(tally.error_logs.items(), key=lambda kv: -kv[1])[:5]))
        check(per_fn["producer-api"].emf > 0 and per_fn["stream-consumer"].emf > 0,
              "no EMF lines from the producer or the consumer")
        # The per-stage timing (#21) leaves the function as EMF like the other histograms.
        check("consumer_stage_duration_seconds" in per_fn["stream-consumer"].metrics,
              f"no consumer_stage_duration_seconds in the consumer's EMF: {sorted(per_fn['stream-consumer'].metrics)}")

        samples = bench_init(side, bins, stack, args.init_starts)
        init = {
            "bootstraps": {k: str(v) for k, v in bins.items()},
            "starts_per_binary": args.init_starts,
            "cold_init_median_ms": {k: ms(v) for k, v in samples.items()},
            "cold_init_samples_ms": {k: [round(x * 1000, 1) for x in v] for k, v in samples.items()},
            "consumer_concurrent_cold_init_ms": [round(x * 1000, 1) for x in timings["consumer_concurrent_cold_init_s"]],
            "consumer_first_invocation_fresh_db_ms": [round(x * 1000, 1)
                                                      for x in timings["consumer_first_invocation_fresh_db_s"]],
            "consumer_first_invocation_fresh_db_median_ms": ms(timings["consumer_first_invocation_fresh_db_s"]),
            "batch_size": args.batch_size,
            "lambda_migrates": args.lambda_migrates,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (OUT / "init.json").write_text(json.dumps(init, indent=2) + "\n")
        for k, v in init["cold_init_median_ms"].items() if args.init_starts else ():
            say(f"init: {k:<16} median {v} ms over {args.init_starts} starts (process start -> first /next)")
        say(f"init: stream-consumer first invocation on the fresh database: median "
            f"{init['consumer_first_invocation_fresh_db_median_ms']} ms over {args.cold_starts} -> "
            f"{(OUT / 'init.json').relative_to(ROOT)}")

        per_type = " ".join(f"{t}={table[t][3]}" for t in sorted(table))
        acked = len(acks)
        pg_total = sum(table[t][3] for t in table)
        final = (f"OK in {time.monotonic() - started:.0f} s — producer acked {acked} (+{len(seeds)} closed-hour records), "
            f"postgres {pg_total} = dynamodb {sum(v[2] for v in table.values())} = lake "
            f"{sum(v[1] for v in table.values())}; per type {per_type}; {consumed['batches']} batches, "
            f"{len(POISON)} poison quarantined; {secure}; {tally.emf} EMF lines valid"
            + ("; init median ms " + " ".join(f"{k}={v}" for k, v in init["cold_init_median_ms"].items())
               if args.init_starts else ""))
        status = 0
    except Exception as e:  # noqa: BLE001 — any failure ends in the one `lambda-e2e: FAILED` line
        if not isinstance(e, Failed):
            traceback.print_exc()
        for f in fns:
            if f.stderr_lines:
                print(f"--- {f.tag} stderr (last lines)\n" + "\n".join(f.stderr_lines[-10:]), file=sys.stderr)
        final, status = f"FAILED — {type(e).__name__ + ': ' if not isinstance(e, Failed) else ''}{e}", 1
    finally:
        for f in fns:
            f.stop()
        for e in emulators:
            e.stop()
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as e:  # noqa: BLE001 — best effort, like Stack.delete
                print(f"lambda-e2e cleanup: {e}", file=sys.stderr)
        if stack is not None and not args.keep:
            stack.delete()
        shutil.rmtree(scratch, ignore_errors=True)
    # The last line of the run, after the clean-up.
    say(final)
    return status
