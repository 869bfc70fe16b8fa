"""Fault 4: poison records written straight to the stream (bypassing the API) in the middle of a load."""
from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import datetime, timezone

from conftest import (
    CONSUMER_METRICS,
    RES,
    Load,
    assert_exact,
    client,
    metric,
    note,
    pid_of,
    scrape,
    verify,
    wait_caught_up,
    wait_gauge_low,
    write_acks,
)

# Kinesis takes records up to 1 MiB (data + partition key); the consumer's limit is ~36 KiB.
NEAR_1_MIB = 1_040_000


def event(event_type: str = "page_view") -> dict:
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"event_id": str(uuid.uuid4()), "event_type": event_type, "occurred_at": now, "received_at": now}


def poison() -> list[tuple[str, bytes]]:
    """(expected reason_code, record data) for every way a record can be unreadable."""
    huge = event()
    huge["properties"] = {"pad": ""}
    pad = NEAR_1_MIB - len(json.dumps({"v": 1, "event": huge}))
    huge["properties"]["pad"] = "x" * pad
    return [
        ("not_json", b"this is not json {"),
        ("invalid_utf8", b'{"v":1,"event":{"event_type":"\xff\xfe"}}'),
        ("malformed_envelope", b"[1, 2, 3]"),
        ("missing_version", json.dumps({"event": event()}).encode()),
        ("unknown_version", json.dumps({"v": 2, "event": event()}).encode()),
        ("invalid_event", json.dumps({"v": 1, "event": event("Not Valid")}).encode()),
        ("too_large", json.dumps({"v": 1, "event": huge}).encode()),
    ]


def dead_letters() -> dict[tuple[str, str], dict]:
    """Every dead-letter row in the bucket, by (shard_id, sequence_number)."""
    s3 = client("s3")
    rows = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=RES.bucket, Prefix="dead-letter/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=RES.bucket, Key=obj["Key"])["Body"].read()
            for line in body.splitlines():
                row = json.loads(line)
                rows[(row["shard_id"], row["sequence_number"])] = row
    return rows


def test_poison_records_are_quarantined_with_their_reason_and_the_shard_flows():
    """Invariant: every record the consumer cannot read (not JSON, invalid UTF-8, not an object,
    no version, unknown version, failing validation, too large) lands once in dead-letter/ with
    its reason code and its exact bytes, on every shard, while the valid records around it (the
    k6 load and a valid record written the same way) are stored exactly once and the consumer
    catches up (verify exits 0)."""
    kinesis = client("kinesis")
    shards = [s for s in kinesis.list_shards(StreamName=RES.stream)["Shards"] if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
    consumer = pid_of("consumer")
    before = scrape(CONSUMER_METRICS)
    earlier = dead_letters()
    written: dict[tuple[str, str], tuple[str, bytes]] = {}
    controls: list[tuple[str, str]] = []
    with Load("poison", duration_s=20) as load:
        load.at(6)
        put_at = time.monotonic()
        for shard in shards:
            hash_key = shard["HashKeyRange"]["StartingHashKey"]
            records = poison()
            control = event()
            records.insert(3, ("", json.dumps({"v": 1, "event": control}).encode()))
            controls.append((control["event_id"], control["event_type"]))
            for reason, data in records:
                out = kinesis.put_record(StreamName=RES.stream, Data=data, PartitionKey="poison", ExplicitHashKey=hash_key)
                assert out["ShardId"] == shard["ShardId"]
                if reason:
                    written[(out["ShardId"], out["SequenceNumber"])] = (reason, data)
        recovery, worst = wait_caught_up(put_at)
        load.finish()

    assert load.check_fails() == {}, "the producer was not affected: every contract check must pass"
    extra = write_acks(load.dir / "control-acks.ndjson", controls)
    v = verify(load.acks, extra)
    assert_exact(v)

    rows = dead_letters()
    for position, (reason, data) in written.items():
        row = rows.get(position)
        assert row is not None, f"{reason} record {position} is not in dead-letter/"
        assert row["reason_code"] == reason, f"{position}: quarantined as {row['reason_code']}, expected {reason}"
        assert base64.b64decode(row["payload_base64"]) == data, f"{position}: dead-letter bytes differ"
    unexpected = {p: r["reason_code"] for p, r in rows.items() if p not in written and p not in earlier}
    assert unexpected == {}, f"records quarantined that were not poison: {unexpected}"

    after = scrape(CONSUMER_METRICS)
    assert pid_of("consumer") == consumer
    per_reason = {}
    for reason, _ in written.values():
        per_reason[reason] = per_reason.get(reason, 0) + 1
    for reason, n in per_reason.items():
        delta = metric(after, "consumer_quarantined_total", reason=reason) - metric(before, "consumer_quarantined_total", reason=reason)
        assert delta == n, f"consumer_quarantined_total{{reason={reason}}} went up by {delta}, expected {n}"
    expected = {}
    for row in list(earlier.values()) + [{"reason_code": r} for r, _ in written.values()]:
        expected[row["reason_code"]] = expected.get(row["reason_code"], 0) + 1
    assert v.quarantined == expected, f"verify counted {v.quarantined}, expected {expected}"
    lag = wait_gauge_low()
    note(
        f"poison: {len(written)} records on {len(shards)} shards ({', '.join(f'{r}={n}' for r, n in sorted(per_reason.items()))}) "
        f"all in dead-letter with reason and bytes; {len(controls)} valid neighbours stored; {load.line()}; "
        f"verify OK {v.acknowledged} events in {v.seconds:.0f} s; caught up {recovery:.1f} s after the poison "
        f"(backlog peak {worst:.1f} s); lag gauge now {lag:.0f} ms"
    )
