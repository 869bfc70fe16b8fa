"""Fault 1: the consumer's local runner is killed with SIGKILL mid-batch and restarted."""
from __future__ import annotations

import time

from conftest import (
    CONSUMER_METRICS,
    Load,
    assert_exact,
    metric,
    note,
    paused,
    pid_of,
    pipeline,
    psql,
    scrape,
    sigkill,
    verify,
    wait_caught_up,
    wait_gauge_low,
)


def batches_in_flight() -> float:
    """Batches of the running consumer that have started their PostgreSQL claim but not ended:
    one claim call per batch attempt, one `consumer_batches_total` increment when it ends."""
    samples = scrape(CONSUMER_METRICS)
    return metric(samples, "consumer_sink_requests_total", sink="postgres") - metric(samples, "consumer_batches_total")


def test_consumer_sigkill_mid_batch_loses_and_double_counts_nothing():
    """Invariant: a consumer killed with SIGKILL at any point of a batch, including after its
    claims are committed in PostgreSQL while its lake and DynamoDB writes are still in flight,
    and then restarted from its checkpoint, leaves every acknowledged event stored exactly once
    (stream, lake, DynamoDB, PostgreSQL counts: verify exits 0)."""
    with Load("consumer-kill", duration_s=35) as load:
        # Kill 1: wherever the batch loop happens to be.
        load.at(8)
        first = sigkill("consumer")
        down_at = time.monotonic()
        time.sleep(3)  # the backlog grows while nothing consumes
        pipeline("up")
        second = pid_of("consumer")
        assert second != first
        recovery1, worst1 = wait_caught_up(down_at)

        # Kill 2: certainly mid-batch. With S3 frozen, every batch that claims its events (and
        # commits their counts) in PostgreSQL then blocks on its Parquet PutObject, while its
        # DynamoDB writes may land: the runner dies holding claimed, counted, unwritten events.
        load.at(22)
        with paused("moto"):
            frozen_at = time.monotonic()
            frozen_ts = psql("SELECT now()")[0][0]
            while (in_flight := batches_in_flight()) < 1 or time.monotonic() - frozen_at < 2:
                assert time.monotonic() - frozen_at < 15, "no batch got past its claim while S3 was frozen"
                time.sleep(0.2)
            sigkill("consumer")
            claimed_frozen = int(psql(f"SELECT count(*) FROM seen_events WHERE claimed_at >= '{frozen_ts}'")[0][0])
        down_at = time.monotonic()
        pipeline("up")
        third = pid_of("consumer")
        assert third not in (first, second)
        recovery2, worst2 = wait_caught_up(down_at)
        load.finish()

    assert load.check_fails() == {}, "the producer was not affected, so every contract check must pass"
    lag_gauge = wait_gauge_low()
    v = verify(load.acks)
    assert_exact(v)
    note(
        f"consumer SIGKILL x2: {load.line()}; verify OK {v.acknowledged} events in {v.seconds:.0f} s; "
        f"caught up {recovery1:.1f} s after kill 1 (3 s down, backlog peak {worst1:.1f} s) and "
        f"{recovery2:.1f} s after kill 2 ({in_flight:.0f} batches past their claim, {claimed_frozen} events claimed "
        f"after S3 froze; backlog peak "
        f"{worst2:.1f} s); lag gauge now {lag_gauge:.0f} ms"
    )
