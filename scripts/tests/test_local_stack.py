"""Checks for scripts/local-stack.sh (run with the project venv):

    bash scripts/local-stack.sh up && .local/venv/bin/pytest -q scripts/tests

Every temporary resource has a uuid suffix, so runs can overlap; each test cleans up after itself.
Only 127.0.0.1 is ever contacted.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from pylib import HOST, ROOT, env_sh, env_str, local_client, run

STACK = ROOT / "scripts" / "local-stack.sh"
RUN_DIR = ROOT / ".local" / "run"
KINESIS = f"http://{HOST}:4567"
DYNAMODB = f"http://{HOST}:4568"
MOTO = f"http://{HOST}:4566"
REGION = "us-east-1"
SERVICES = ("kinesalite", "dynalite", "moto")

STREAM_NAME = env_str("STREAM_NAME", "analytics-events")
LAKE_BUCKET = env_str("LAKE_BUCKET", "analytics-lake")
DYNAMODB_TABLE = env_str("DYNAMODB_TABLE", "analytics-events")
SECRET_NAME = "analytics/postgres"


def run_stack(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run(["bash", str(STACK), *args], timeout=timeout)


def client(service: str, url: str, **config):
    return local_client(service, url, region=REGION, **config)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def pids() -> dict[str, str]:
    out = {}
    for name in SERVICES:
        f = RUN_DIR / f"{name}.pid"
        if f.exists():
            out[name] = f.read_text().strip()
    return out


@pytest.fixture(scope="session", autouse=True)
def stack_up():
    """Make sure the stack is up (normally it already is: this run of `up` is then a no-op)."""
    res = run_stack("up")
    assert res.returncode == 0, f"local-stack.sh up failed:\n{res.stdout}\n{res.stderr}"


def test_up_again_is_harmless():
    before = pids()
    t0 = time.monotonic()
    res = run_stack("up")
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, f"second up failed:\n{res.stdout}\n{res.stderr}"
    assert pids() == before, "a second `up` must not restart services"
    for name, pid in before.items():
        assert Path(f"/proc/{pid}").exists(), f"{name} pid {pid} is gone"
    assert "started (pid" not in res.stderr, res.stderr
    print(f"warm up: {elapsed:.2f}s")


def test_status_reports_all_up():
    res = run_stack("status", timeout=60)
    assert res.returncode == 0, f"status says something is down:\n{res.stdout}\n{res.stderr}"
    lines = res.stdout.strip().splitlines()
    for label in ("Kinesis", "DynamoDB", "S3+SecretsManager", "PostgreSQL"):
        line = next((l for l in lines if l.startswith(label)), None)
        assert line is not None, f"no status line for {label}:\n{res.stdout}"
        assert " up " in f"{line} ", line
        assert f"{HOST}:" in line, line


def test_env_matches_env_sh():
    res = run_stack("env", timeout=60)
    assert res.returncode == 0, res.stderr
    printed = dict(
        line[len("export "):].split("=", 1) for line in res.stdout.splitlines() if line.startswith("export ")
    )
    # What `source scripts/env.sh` gives in a clean environment.
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    sourced_env = env_sh(clean)
    expected = {
        "AWS_ENDPOINT_URL_KINESIS": KINESIS,
        "AWS_ENDPOINT_URL_DYNAMODB": DYNAMODB,
        "AWS_ENDPOINT_URL_S3": MOTO,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": MOTO,
        "AWS_ENDPOINT_URL_SQS": MOTO,
        "ON_FAILURE_QUEUE_URL": f"{MOTO}/123456789012/analytics-consumer-failures",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": REGION,
        "STREAM_NAME": "analytics-events",
        "LAKE_BUCKET": "analytics-lake",
        "DYNAMODB_TABLE": "analytics-events",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/analytics",
        "DATABASE_SECRET_ARN": SECRET_NAME,
    }
    for k, v in expected.items():
        assert sourced_env.get(k) == v, (k, sourced_env.get(k))
        assert k in printed, f"`env` does not print {k}"
    # Overrides win in env.sh.
    assert env_sh({**clean, "STREAM_NAME": "other"})["STREAM_NAME"] == "other"


def test_bootstrapped_resources_exist():
    kinesis = client("kinesis", KINESIS)
    desc = kinesis.describe_stream_summary(StreamName=STREAM_NAME)["StreamDescriptionSummary"]
    assert desc["StreamStatus"] == "ACTIVE"
    assert desc["OpenShardCount"] == 2
    client("s3", MOTO, s3={"addressing_style": "path"}).head_bucket(Bucket=LAKE_BUCKET)
    table = client("dynamodb", DYNAMODB).describe_table(TableName=DYNAMODB_TABLE)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "event_id", "KeyType": "HASH"}]
    assert table["TableStatus"] == "ACTIVE"
    # The on-failure queue `replay queue` reads, at the URL scripts/env.sh names.
    sqs = client("sqs", MOTO)
    url = sqs.get_queue_url(QueueName="analytics-consumer-failures")["QueueUrl"]
    assert url.rsplit("/", 1)[-1] == "analytics-consumer-failures"
    sqs.get_queue_attributes(QueueUrl=f"{MOTO}/123456789012/analytics-consumer-failures", AttributeNames=["All"])


def test_kinesis_round_trip():
    kinesis = client("kinesis", KINESIS)
    name = unique("test-stream")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    try:
        kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
        payload = json.dumps({"event_id": str(uuid.uuid4()), "event_type": "page_view"}).encode()
        put = kinesis.put_record(StreamName=name, Data=payload, PartitionKey="pk")
        it = kinesis.get_shard_iterator(
            StreamName=name,
            ShardId=put["ShardId"],
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=put["SequenceNumber"],
        )["ShardIterator"]
        records = kinesis.get_records(ShardIterator=it, Limit=10)["Records"]
        assert records and records[0]["Data"] == payload
        assert records[0]["SequenceNumber"] == put["SequenceNumber"]
    finally:
        kinesis.delete_stream(StreamName=name)


def test_s3_round_trip():
    s3 = client("s3", MOTO, s3={"addressing_style": "path"})
    bucket = unique("test-bucket")
    s3.create_bucket(Bucket=bucket)
    key = "events/dt=2024-01-01/hour=00/x.parquet"
    body = os.urandom(1024)
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    finally:
        s3.delete_object(Bucket=bucket, Key=key)
        s3.delete_bucket(Bucket=bucket)


def test_dynamodb_round_trip():
    ddb = client("dynamodb", DYNAMODB)
    table = unique("test-table")
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "event_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "event_id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
        event_id = str(uuid.uuid4())
        item = {"event_id": {"S": event_id}, "event_type": {"S": "click"}, "expires_at": {"N": "1700000000"}}
        ddb.put_item(TableName=table, Item=item)
        got = ddb.get_item(TableName=table, Key={"event_id": {"S": event_id}}, ConsistentRead=True)["Item"]
        assert got == item
    finally:
        ddb.delete_table(TableName=table)


def test_bootstrap_makes_the_table_without_indexes_and_is_idempotent():
    """bootstrap's own ensure_table on a new table: keyed by event_id alone, no secondary index
    (forget deletes a visitor's items by the event IDs of its lake rows), and a second run on the
    table it made does nothing."""
    import bootstrap_resources as bootstrap

    ddb = client("dynamodb", DYNAMODB)
    table = unique("test-table")
    bootstrap.ensure_table(ddb, table)
    try:
        desc = ddb.describe_table(TableName=table)["Table"]
        assert desc["KeySchema"] == [{"AttributeName": "event_id", "KeyType": "HASH"}]
        assert desc["AttributeDefinitions"] == [{"AttributeName": "event_id", "AttributeType": "S"}]
        assert "GlobalSecondaryIndexes" not in desc and "LocalSecondaryIndexes" not in desc
        bootstrap.ensure_table(ddb, table)
        assert ddb.describe_table(TableName=table)["Table"]["KeySchema"] == desc["KeySchema"]
    finally:
        ddb.delete_table(TableName=table)


def test_a_table_with_the_former_erasure_indexes_is_accepted_as_it_is():
    """A table the previous bootstrap made, with forget's former indexes by_anonymous_id and
    by_user_id, is accepted (a stack that was up before the change keeps working) and left alone:
    nothing reads the indexes, and dynalite could not drop them anyway."""
    import bootstrap_resources as bootstrap

    ddb = client("dynamodb", DYNAMODB)
    table = unique("test-old-table")
    former = {"by_anonymous_id": "anonymous_id", "by_user_id": "user_id"}
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("event_id", *former.values())],
        KeySchema=[{"AttributeName": "event_id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {"IndexName": index, "KeySchema": [{"AttributeName": attribute, "KeyType": "HASH"}],
             "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["site"]}}
            for index, attribute in former.items()
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
        bootstrap.ensure_table(ddb, table)
        desc = ddb.describe_table(TableName=table)["Table"]
        assert desc["KeySchema"] == [{"AttributeName": "event_id", "KeyType": "HASH"}]
        assert sorted(ix["IndexName"] for ix in desc["GlobalSecondaryIndexes"]) == sorted(former)
    finally:
        ddb.delete_table(TableName=table)


def test_secret_is_readable():
    sm = client("secretsmanager", MOTO)
    value = sm.get_secret_value(SecretId=SECRET_NAME)
    secret = json.loads(value["SecretString"])
    assert secret == {
        "username": "postgres",
        "password": "",
        "host": "127.0.0.1",
        "port": 5432,
        "dbname": "analytics",
    }
    # The ARN works as SecretId too (DATABASE_SECRET_ARN may hold either).
    assert sm.get_secret_value(SecretId=value["ARN"])["SecretString"] == value["SecretString"]


def test_postgres_query():
    res = run(
        ["psql", "-X", "-h", HOST, "-p", "5432", "-U", "postgres", "-d", "analytics", "-Atc",
         "select current_database() || ' ' || (1 + 1)"],
        timeout=30, env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "analytics 2"
