"""Fault 3: PostgreSQL (the consumer's arbiter: claims, counts, checkpoints) goes away under load."""
from __future__ import annotations

import subprocess
import time

from conftest import (
    HOST,
    Load,
    assert_exact,
    note,
    pid_of,
    verify,
    wait_caught_up,
    wait_gauge_low,
)

def cluster() -> tuple[str, str]:
    """(version, name) of the Debian cluster serving port 5432."""
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        ver, name, port, *_ = line.split()
        if port == "5432":
            return ver, name
    raise AssertionError(f"no PostgreSQL cluster on port 5432:\n{out}")


def pg_ctl(action: str) -> float:
    ver, name = cluster()
    started = time.monotonic()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", ver, name, action],
        check=True,
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def wait_ready(limit: float = 60) -> float:
    started = time.monotonic()
    while subprocess.run(["pg_isready", "-q", "-h", HOST, "-p", "5432"]).returncode != 0:
        assert time.monotonic() - started < limit, "PostgreSQL not ready"
        time.sleep(0.1)
    return time.monotonic() - started


def test_postgres_restart_keeps_counts_exact():
    """Invariant: when PostgreSQL restarts under load (every connection dropped, then refused
    until it is up again), the consumer's batch in hand fails either before its claim commits
    or after, is retried until PostgreSQL is back, and every acknowledged event ends up counted
    and stored exactly once (verify exits 0; nothing goes to dead-letter as `batch_failed`).
    A longer PostgreSQL outage is in test_03_stores_refuse.py."""
    with Load("postgres-restart", duration_s=25) as load:
        consumer = pid_of("consumer")
        load.at(8)
        began = time.monotonic()
        restart_s = pg_ctl("restart") + wait_ready()
        recovery, worst = wait_caught_up(began)
        assert pid_of("consumer") == consumer, "the consumer died with PostgreSQL"
        load.finish()

    assert load.check_fails() == {}, "the producer does not use PostgreSQL: every contract check must pass"
    lag = wait_gauge_low()
    v = verify(load.acks)
    assert_exact(v)
    assert "batch_failed" not in v.quarantined, f"batches were dead-lettered: {v.quarantined}"
    note(
        f"postgres restart: {load.line()}; verify OK {v.acknowledged} events in {v.seconds:.0f} s; "
        f"restart took {restart_s:.1f} s; caught up {recovery:.1f} s after it began (backlog peak {worst:.1f} s); "
        f"lag gauge now {lag:.0f} ms"
    )
