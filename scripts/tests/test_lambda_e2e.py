"""The pieces of `make lambda-e2e` that need no Lambda: the EMF schema (against lines that must
pass and lines that must fail), telling EMF lines from logs, and the shapes of the events."""

import base64
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lambda_e2e import emf, events

FIXTURES = Path(emf.__file__).with_name("fixtures") / "emf_lines.jsonl"
CASES = [json.loads(line) for line in FIXTURES.read_text().splitlines() if line.strip()]


def test_the_schema_is_a_valid_2020_12_schema():
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(emf.load_schema())


@pytest.mark.parametrize("case", CASES, ids=[c["why"] for c in CASES])
def test_emf_lines(case):
    problems = emf.errors(case["line"])
    assert (problems == []) == case["valid"], problems


def test_limits_of_the_specification():
    def doc(metrics: int, dims: int, values: int) -> dict:
        d = {f"d{i}": "v" for i in range(dims)}
        m = {f"m{i}": [1.0] * values for i in range(metrics)}
        return {"_aws": {"Timestamp": 1, "CloudWatchMetrics": [{
            "Namespace": "n", "Dimensions": [list(d)], "Metrics": [{"Name": k} for k in m]}]}, **d, **m}

    assert emf.errors(doc(100, 30, 100)) == []
    assert emf.errors(doc(101, 1, 1)), "more than 100 metrics in a directive"
    assert emf.errors(doc(1, 31, 1)), "more than 30 dimensions in a set"
    assert emf.errors(doc(1, 1, 101)), "more than 100 values in a metric's array"


def test_timestamp_is_milliseconds_of_now():
    line = json.loads(json.dumps(CASES[0]["line"]))
    assert emf.errors(line, now_ms=line["_aws"]["Timestamp"] + 5_000) == []
    line["_aws"]["Timestamp"] //= 1000  # seconds
    assert emf.errors(line, now_ms=line["_aws"]["Timestamp"] * 1000)


def test_lines_are_told_apart():
    now = {"Timestamp": int(time.time() * 1000)}
    good = {**CASES[0]["line"], "_aws": {**CASES[0]["line"]["_aws"], **now}}
    bad = {**CASES[-1]["line"], "_aws": {**CASES[-1]["line"]["_aws"], **now}}
    tally = emf.Tally()
    tally.add_line(json.dumps(good))
    tally.add_line('{"timestamp":"2026-12-06T03:00:00Z","level":"INFO","message":"batch done"}')
    tally.add_line('{"timestamp":"2026-12-06T03:00:00Z","level":"ERROR","message":"Failed to record histogram value"}', "c")
    tally.add_line("thread 'main' panicked")
    tally.add_line("")
    tally.add_line(json.dumps(bad), "src")
    assert (tally.emf, tally.logs, tally.text) == (2, 2, 1)
    assert tally.error_logs == {"c: Failed to record histogram value": 1}
    assert tally.metrics == {"producer_requests_total", "m"}
    assert len(tally.invalid) == 1 and tally.invalid[0].startswith("src: ")


def test_kinesis_record_is_shaped_like_the_event_source_mappings():
    arrival = datetime(2026, 12, 6, 3, 0, 0, 123000, tzinfo=timezone.utc)
    rec = events.kinesis_record("shardId-000000000001", {
        "SequenceNumber": "4960", "ApproximateArrivalTimestamp": arrival, "Data": b'{"v":1}', "PartitionKey": "k"},
        "s")
    assert rec["eventID"] == "shardId-000000000001:4960"
    assert rec["eventSourceARN"] == "arn:aws:kinesis:us-east-1:123456789012:stream/s"
    assert rec["kinesis"]["approximateArrivalTimestamp"] == 1796526000.123
    assert base64.b64decode(rec["kinesis"]["data"]) == b'{"v":1}'
    assert (rec["eventSource"], rec["eventName"], rec["kinesis"]["partitionKey"]) == ("aws:kinesis", "aws:kinesis:record", "k")


def test_proxy_events_and_responses():
    v1 = events.api_gateway_v1("POST", "/events", {"Content-Type": "text/plain"}, b"\x1f\x8b", base64_encoded=True)
    assert v1["requestContext"]["path"] == "/prod/events" and v1["isBase64Encoded"]
    assert base64.b64decode(v1["body"]) == b"\x1f\x8b"
    v2 = events.api_gateway_v2("GET", "/health", {"User-Agent": "x"}, None)
    assert v2["version"] == "2.0" and "body" not in v2 and v2["headers"] == {"user-agent": "x"}
    status, headers, body = events.parse_proxy_response(
        {"statusCode": 202, "headers": {"Content-Type": "application/json"}, "body": base64.b64encode(b"{}").decode(),
         "isBase64Encoded": True})
    assert (status, headers["content-type"], body) == (202, "application/json", b"{}")
    scheduled = events.scheduled_event()
    assert (scheduled["detail-type"], scheduled["source"], scheduled["version"]) == ("Scheduled Event", "aws.events", "0")
