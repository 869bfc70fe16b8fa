"""Fault 2b: the consumer's stores go away hard: connections refused and reset, not just slow.

A frozen emulator (test_02) only makes calls hang: the kernel still accepts connections, so no
call fails and no retry is ever used up. An endpoint that is down, restarting or partitioned
away refuses or resets connections instead, and every call fails fast. Here the consumer talks
to S3 and PostgreSQL through TCP proxies that refuse service (S3 20 s, PostgreSQL 35 s) while the load goes
on. (DynamoDB is left out: its writes retry within SINK_BUDGET_MS, 20 s, so an outage there
only makes each attempt of a batch last 20 s, which S3 and PostgreSQL exercise already.)
"""
from __future__ import annotations

import contextlib
import time

from conftest import (
    CONSUMER_METRICS,
    Load,
    Proxy,
    assert_exact,
    metric,
    note,
    pid_of,
    pipeline,
    scrape,
    stack_env,
    verify,
    wait_caught_up,
    wait_gauge_low,
)

S3_OUTAGE_S = 20
# Longer than the runner's RUNNER_MAX_ATTEMPTS (5) x the pool's 5 s acquire timeout: a failover
# of a managed PostgreSQL takes one to two minutes.
PG_OUTAGE_S = 35


def test_consumer_outlasts_stores_refusing_connections():
    """Invariant: while S3 refuses connections (20 s), then while PostgreSQL does (35 s), the consumer keeps retrying the batch in hand instead of giving it up to
    dead-letter, then catches up, and every acknowledged event is stored and counted exactly
    once (verify exits 0, nothing quarantined as `batch_failed`)."""
    s3, pg = Proxy(4566), Proxy(5432)
    db_url = stack_env()["DATABASE_URL"].replace("@127.0.0.1:5432/", f"@127.0.0.1:{pg.port}/")
    assert str(pg.port) in db_url
    try:
        pipeline("down")
        pipeline("up", AWS_ENDPOINT_URL_S3=s3.url, DATABASE_URL=db_url)
        consumer = pid_of("consumer")
        with Load("stores-refuse", duration_s=75) as load:
            load.at(6)
            s3.refuse()
            down_at = time.monotonic()
            time.sleep(S3_OUTAGE_S)
            s3.accept()
            recovery1, worst1 = wait_caught_up(down_at)

            load.at(max(load.elapsed() + 2, 30))
            pg.refuse()
            down_at = time.monotonic()
            time.sleep(PG_OUTAGE_S)
            pg.accept()
            recovery2, worst2 = wait_caught_up(down_at)
            load.finish()
        lag = wait_gauge_low()
        failed = metric(scrape(CONSUMER_METRICS), "consumer_batches_total", outcome="failed")
        assert pid_of("consumer") == consumer, "the consumer died"
        # The verifier waits until the consumer has claimed every acknowledged event, so it runs
        # before this pipeline (the one behind the proxies) goes down: a low lag gauge does not
        # mean the last acknowledged records have been read yet, and once the consumer is
        # stopped they never would be (they stay on the stream, after the checkpoint).
        v = verify(load.acks)
    finally:
        with contextlib.suppress(AssertionError):
            pipeline("down")
        for proxy in (s3, pg):
            proxy.close()

    assert load.check_fails() == {}, "the producer does not use these stores: every contract check must pass"
    assert_exact(v)
    assert "batch_failed" not in v.quarantined, f"batches were given up to dead-letter: {v.quarantined}"
    note(
        f"stores refuse connections: S3 {S3_OUTAGE_S} s, then PostgreSQL {PG_OUTAGE_S} s: {load.line()}; {failed:.0f} batch "
        f"attempts failed and were retried; verify OK {v.acknowledged} events in {v.seconds:.0f} s; caught up "
        f"{recovery1:.1f} s / {recovery2:.1f} s after each outage began (backlog peaks {worst1:.1f} s / {worst2:.1f} s); "
        f"lag gauge now {lag:.0f} ms"
    )
