#!/usr/bin/env python3
"""Create the local AWS resources idempotently against the loopback emulators.

Run by `scripts/local-stack.sh up` with the project venv's python (boto3 from
scripts/requirements/stack.txt). Endpoints are always 127.0.0.1: this script never targets AWS.

  Kinesis stream   $STREAM_NAME    (default analytics-events, 2 shards; waits until ACTIVE)
  S3 bucket        $LAKE_BUCKET    (default analytics-lake)
  DynamoDB table   $DYNAMODB_TABLE (default analytics-events; hash key event_id S,
                                    PAY_PER_REQUEST; TTL on expires_at where supported; no
                                    secondary index, as terraform/dynamodb.tf)
  Secret           $DATABASE_SECRET_NAME (default analytics/postgres) =
                   {"username","password","host","port","dbname"} for the local PostgreSQL
  SQS queue        the last part of $ON_FAILURE_QUEUE_URL (default analytics-consumer-failures):
                   the consumer's on-failure queue, which `replay queue` reads (the runner sends
                   to it only when RUNNER_ON_FAILURE_QUEUE_URL is set)

Ports: KINESIS_PORT (4567), DYNAMODB_PORT (4568), MOTO_PORT (4566).
"""
from __future__ import annotations

import functools
import json
import sys

from botocore.exceptions import ClientError

from pylib import HOST, env_int, env_str, local_client, local_endpoint, wait_until

REGION = env_str("AWS_REGION", "us-east-1")

STREAM_NAME = env_str("STREAM_NAME", "analytics-events")
STREAM_SHARDS = env_int("STREAM_SHARDS", 2)
LAKE_BUCKET = env_str("LAKE_BUCKET", "analytics-lake")
DYNAMODB_TABLE = env_str("DYNAMODB_TABLE", "analytics-events")
TTL_ATTRIBUTE = "expires_at"
FAILURE_QUEUE = env_str("ON_FAILURE_QUEUE_URL", "analytics-consumer-failures").rstrip("/").rsplit("/", 1)[-1]
SECRET_NAME = env_str("DATABASE_SECRET_NAME", "analytics/postgres")
if SECRET_NAME.startswith("arn:") and ":secret:" in SECRET_NAME:
    # DATABASE_SECRET_ARN may hold a full ARN: the name is what follows ":secret:", minus the
    # random "-XXXXXX" suffix Secrets Manager appends.
    SECRET_NAME = SECRET_NAME.split(":secret:", 1)[1]
    if len(SECRET_NAME) > 7 and SECRET_NAME[-7] == "-":
        SECRET_NAME = SECRET_NAME[:-7]
SECRET_VALUE = {
    "username": "postgres",
    "password": "",
    "host": HOST,
    "port": env_int("PG_PORT", 5432),
    "dbname": env_str("PG_DATABASE", "analytics"),
}


def client(service: str, url: str, **config):
    # Explicit loopback endpoint and dummy credentials: never the caller's real AWS profile.
    return local_client(service, url, region=REGION, **config)


def log(msg: str) -> None:
    print(f"bootstrap: {msg}", flush=True)


def code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def create_active(what: str, create, describe, status, created: str = "created") -> dict:
    """create() the resource (one that exists already is fine), then describe() it every 0.1 s
    until status(description) is ACTIVE, and return that description; exits after 60 s."""
    try:
        create()
        log(f"{what}: {created}")
    except ClientError as e:
        if code(e) != "ResourceInUseException":
            raise
    try:
        return wait_until(describe, lambda d: status(d) == "ACTIVE", timeout=60, interval=0.1,
                          failure=lambda d: f"bootstrap: {what} still {status(d)} after 60s")
    except TimeoutError as e:
        raise SystemExit(str(e)) from None


def ensure_stream(kinesis) -> None:
    desc = create_active(
        f"kinesis stream {STREAM_NAME}",
        lambda: kinesis.create_stream(StreamName=STREAM_NAME, ShardCount=STREAM_SHARDS),
        lambda: kinesis.describe_stream_summary(StreamName=STREAM_NAME)["StreamDescriptionSummary"],
        lambda d: d["StreamStatus"],
        created=f"created with {STREAM_SHARDS} shards",
    )
    shards = desc.get("OpenShardCount")
    if shards != STREAM_SHARDS:
        log(f"WARNING: kinesis stream {STREAM_NAME} has {shards} open shards, expected {STREAM_SHARDS} "
            f"(restart kinesalite to recreate it: local-stack.sh down && up)")
    log(f"kinesis stream {STREAM_NAME}: ACTIVE, {shards} shards")


def ensure_bucket(s3) -> None:
    try:
        s3.head_bucket(Bucket=LAKE_BUCKET)
        log(f"s3 bucket {LAKE_BUCKET}: exists")
        return
    except ClientError as e:
        if code(e) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    kwargs = {"Bucket": LAKE_BUCKET}
    if REGION != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": REGION}
    try:
        s3.create_bucket(**kwargs)
        log(f"s3 bucket {LAKE_BUCKET}: created")
    except ClientError as e:
        if code(e) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
        log(f"s3 bucket {LAKE_BUCKET}: exists")


def ensure_table(ddb, name: str = DYNAMODB_TABLE) -> None:
    # No secondary index: forget deletes a visitor's items by the event IDs of its lake rows.
    create = functools.partial(
        ddb.create_table,
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "event_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "event_id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    table = create_active(
        f"dynamodb table {name}",
        create,
        lambda: ddb.describe_table(TableName=name)["Table"],
        lambda t: t["TableStatus"],
    )
    key = [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]]
    if key != [("event_id", "HASH")]:
        raise SystemExit(f"bootstrap: dynamodb table {name} exists with key schema {key}, "
                         "expected event_id HASH; delete it or restart dynalite")
    # A table made before forget went through the lake has its former indexes (by_anonymous_id,
    # by_user_id). It is accepted as it is: nothing reads them, and dynalite 4.0.0's UpdateTable
    # ignores index deletes; they only cost dynalite CPU per write until a restart of the stack
    # (the table lives in memory) recreates the table without them.
    # TTL: dynalite implements DescribeTimeToLive but not UpdateTimeToLive; tolerate that.
    try:
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and ttl.get("AttributeName") == TTL_ATTRIBUTE:
            log(f"dynamodb table {name}: ACTIVE, TTL on {TTL_ATTRIBUTE}")
            return
        ddb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
        log(f"dynamodb table {name}: ACTIVE, TTL enabled on {TTL_ATTRIBUTE}")
    except ClientError as e:
        if code(e) not in ("UnknownOperationException", "UnrecognizedClientException", "ValidationException"):
            raise
        log(f"dynamodb table {name}: ACTIVE (TTL not supported by the emulator: {code(e)}; skipped)")


def ensure_secret(sm) -> str:
    value = json.dumps(SECRET_VALUE, separators=(",", ":"))
    try:
        arn = sm.create_secret(Name=SECRET_NAME, SecretString=value)["ARN"]
        log(f"secret {SECRET_NAME}: created ({arn})")
        return arn
    except ClientError as e:
        if code(e) != "ResourceExistsException":
            raise
    current = sm.get_secret_value(SecretId=SECRET_NAME)
    arn = current["ARN"]
    try:
        same = json.loads(current.get("SecretString") or "null") == SECRET_VALUE
    except ValueError:
        same = False
    if same:
        log(f"secret {SECRET_NAME}: exists ({arn})")
    else:
        sm.put_secret_value(SecretId=SECRET_NAME, SecretString=value)
        log(f"secret {SECRET_NAME}: value updated ({arn})")
    return arn


def ensure_queue(sqs) -> None:
    # CreateQueue with the same name and no attributes returns the existing queue.
    url = sqs.create_queue(QueueName=FAILURE_QUEUE)["QueueUrl"]
    log(f"sqs queue {FAILURE_QUEUE}: ready ({url})")


def main() -> int:
    kinesis = client("kinesis", local_endpoint("KINESIS_PORT", 4567))
    ddb = client("dynamodb", local_endpoint("DYNAMODB_PORT", 4568))
    moto = local_endpoint("MOTO_PORT", 4566)
    s3 = client("s3", moto, s3={"addressing_style": "path"})
    sm = client("secretsmanager", moto)
    sqs = client("sqs", moto)
    try:
        ensure_stream(kinesis)
        ensure_bucket(s3)
        ensure_table(ddb)
        ensure_secret(sm)
        ensure_queue(sqs)
    except ClientError as e:
        print(f"bootstrap: ERROR: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # connection refused etc.: make it one clear line
        print(f"bootstrap: ERROR: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
