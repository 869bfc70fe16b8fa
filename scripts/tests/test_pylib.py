"""Unit tests of scripts/pylib.py's pure helpers (no local stack needed)."""

from __future__ import annotations

import math
import string
import time

import pytest

import pylib

# What the producer and consumer serve on /metrics (metrics-exporter-prometheus): a counter with
# and without labels, a gauge per shard, a histogram with an "le" per bucket, and a label value
# with escapes, which a hand-written split() would get wrong. Two scrapes of it, BEFORE and AFTER:
# $names are the values, and a series whose value is "-" is not in that scrape (it appeared
# between the two).
EXPOSITION = string.Template("""\
# HELP producer_requests_total HTTP requests by status code
# TYPE producer_requests_total counter
producer_requests_total{status="202"} $ok
producer_requests_total{status="503"} 1
producer_requests_total{status="400"} $bad
# TYPE consumer_events_stored_total counter
consumer_events_stored_total $stored
# TYPE consumer_millis_behind_latest gauge
consumer_millis_behind_latest{shard="shardId-000000000000"} $lag0
consumer_millis_behind_latest{shard="shardId-000000000001"} $lag1
# TYPE consumer_sink_duration_seconds histogram
consumer_sink_duration_seconds_bucket{sink="s3",le="0.1"} $s3_fast
consumer_sink_duration_seconds_bucket{sink="s3",le="0.5"} $s3_slow
consumer_sink_duration_seconds_bucket{sink="s3",le="+Inf"} $s3_all
consumer_sink_duration_seconds_sum{sink="s3"} $s3_sum
consumer_sink_duration_seconds_count{sink="s3"} $s3_all
consumer_sink_duration_seconds_bucket{sink="postgres",le="0.1"} $pg_fast
consumer_sink_duration_seconds_bucket{sink="postgres",le="0.5"} $pg_all
consumer_sink_duration_seconds_bucket{sink="postgres",le="+Inf"} $pg_all
consumer_sink_duration_seconds_sum{sink="postgres"} $pg_sum
consumer_sink_duration_seconds_count{sink="postgres"} $pg_all
# TYPE odd_total counter
odd_total{path="a \\"quoted\\" \\\\ path"} $odd
""")


def scrape_text(**values: str) -> str:
    text = EXPOSITION.substitute(values)
    return "".join(line for line in text.splitlines(keepends=True) if not line.endswith(" -\n"))


BEFORE = scrape_text(ok="10", bad="-", stored="100", lag0="250", lag1="1500", s3_fast="1", s3_slow="2",
                     s3_all="2", s3_sum="0.4", pg_fast="-", pg_all="-", pg_sum="-", odd="-")
AFTER = scrape_text(ok="25", bad="3", stored="160", lag0="40", lag1="75.5", s3_fast="11", s3_slow="12",
                    s3_all="13", s3_sum="3.9", pg_fast="0", pg_all="10", pg_sum="2.5", odd="1")


def key(name: str, **labels: str):
    return (name, frozenset(labels.items()))


def test_parse_metrics_keeps_sample_names_and_labels():
    samples = pylib.parse_metrics(AFTER)
    assert samples[key("producer_requests_total", status="202")] == 25.0
    assert samples[key("consumer_events_stored_total")] == 160.0
    assert samples[key("consumer_millis_behind_latest", shard="shardId-000000000001")] == 75.5
    assert samples[key("consumer_sink_duration_seconds_bucket", sink="s3", le="+Inf")] == 13.0
    assert samples[key("consumer_sink_duration_seconds_sum", sink="postgres")] == 2.5
    assert samples[key("consumer_sink_duration_seconds_count", sink="postgres")] == 10.0
    assert samples[key("odd_total", path='a "quoted" \\ path')] == 1.0
    assert len(samples) == 17


def test_parse_metrics_rejects_malformed_text():
    with pytest.raises(ValueError):
        pylib.parse_metrics("producer_requests_total{status=202} 1\n")


def test_read_metrics_reads_a_saved_scrape(tmp_path):
    path = tmp_path / "metrics-after.producer"
    path.write_text(AFTER)
    assert pylib.read_metrics(path) == pylib.parse_metrics(AFTER)


def test_metric_sum_filters_by_label_subset():
    samples = pylib.parse_metrics(AFTER)
    assert pylib.metric_sum(samples, "producer_requests_total") == 29.0
    assert pylib.metric_sum(samples, "producer_requests_total", status="202") == 25.0
    assert pylib.metric_sum(samples, "consumer_sink_duration_seconds_count", sink="s3") == 13.0
    assert pylib.metric_sum(samples, "producer_requests_total", status="500") == 0.0
    assert pylib.metric_sum(samples, "no_such_metric") == 0.0


def test_metric_max_is_the_largest_series_or_zero():
    samples = pylib.parse_metrics(BEFORE)
    assert pylib.metric_max(samples, "consumer_millis_behind_latest") == 1500.0
    assert pylib.metric_max(samples, "no_such_metric") == 0.0


def test_series_delta_counts_new_series_from_zero():
    delta = pylib.series_delta(pylib.parse_metrics(BEFORE), pylib.parse_metrics(AFTER))
    assert delta[key("producer_requests_total", status="202")] == 15.0
    assert delta[key("producer_requests_total", status="503")] == 0.0
    assert delta[key("producer_requests_total", status="400")] == 3.0
    assert pylib.metric_sum(delta, "consumer_events_stored_total") == 60.0


def test_bucket_quantile_adds_label_sets_and_returns_bucket_bounds():
    after = pylib.parse_metrics(AFTER)
    # Buckets over both sinks: le=0.1 -> 11, le=0.5 -> 22, le=+Inf -> 23.
    assert pylib.bucket_quantile(after, "consumer_sink_duration_seconds", 0.25) == 0.1
    assert pylib.bucket_quantile(after, "consumer_sink_duration_seconds", 0.5) == 0.5
    assert pylib.bucket_quantile(after, "consumer_sink_duration_seconds", 0.99) == math.inf
    # Of the observations between the two scrapes: le=0.1 -> 10, 0.5 -> 20, +Inf -> 21.
    delta = pylib.series_delta(pylib.parse_metrics(BEFORE), after)
    assert pylib.bucket_quantile(delta, "consumer_sink_duration_seconds", 0.5) == 0.5
    assert pylib.bucket_quantile(delta, "consumer_sink_duration_seconds", 0.4) == 0.1


def test_bucket_quantile_without_observations_is_none():
    assert pylib.bucket_quantile({}, "consumer_sink_duration_seconds", 0.5) is None
    same = pylib.parse_metrics(BEFORE)
    assert pylib.bucket_quantile(pylib.series_delta(same, same), "consumer_sink_duration_seconds", 0.5) is None


def test_env_helpers_treat_empty_as_unset(monkeypatch):
    monkeypatch.setenv("PYLIB_TEST_VALUE", "")
    assert pylib.env_str("PYLIB_TEST_VALUE", "dflt") == "dflt"
    assert pylib.env_int("PYLIB_TEST_VALUE", 7) == 7
    monkeypatch.setenv("PYLIB_TEST_VALUE", "2.5")
    assert pylib.env_float("PYLIB_TEST_VALUE", 1.0) == 2.5
    assert pylib.env_str("PYLIB_TEST_VALUE", "dflt") == "2.5"
    monkeypatch.setenv("PYLIB_TEST_PORT", "9999")
    assert pylib.local_endpoint("PYLIB_TEST_PORT", 4567) == "http://127.0.0.1:9999"
    monkeypatch.delenv("PYLIB_TEST_PORT")
    assert pylib.local_endpoint("PYLIB_TEST_PORT", 4567) == "http://127.0.0.1:4567"


def test_env_sh_gives_the_local_stack_defaults():
    env = pylib.env_sh({"PATH": "/usr/bin:/bin", "STREAM_NAME": "other"})
    assert env["AWS_ENDPOINT_URL_KINESIS"] == "http://127.0.0.1:4567"
    assert env["STREAM_NAME"] == "other"


def test_run_captures_text_from_the_repository_root():
    res = pylib.run(["pwd"])
    assert res.returncode == 0 and res.stdout.strip() == str(pylib.ROOT)


def test_wait_until_returns_the_first_done_value():
    values = iter(range(10))
    assert pylib.wait_until(lambda: next(values), lambda v: v >= 3, timeout=5, interval=0, failure=str) == 3


def test_wait_until_raises_with_the_last_value():
    with pytest.raises(TimeoutError, match="still 1"):
        pylib.wait_until(lambda: 1, lambda v: False, timeout=0.05, interval=0.01, failure=lambda v: f"still {v}")
    started = time.monotonic() - 10  # a deadline already past: one probe, then the error
    with pytest.raises(TimeoutError):
        pylib.wait_until(lambda: 1, lambda v: False, timeout=5, interval=1, failure=str, start=started)


def test_local_client_uses_dummy_keys_and_the_given_endpoint():
    pytest.importorskip("boto3")
    s3 = pylib.local_client("s3", "http://127.0.0.1:4566", s3={"addressing_style": "path"})
    assert s3.meta.endpoint_url == "http://127.0.0.1:4566"
    assert s3.meta.region_name == "us-east-1"
    creds = s3._request_signer._credentials
    assert (creds.access_key, creds.secret_key, creds.token) == ("test", "test", None)
