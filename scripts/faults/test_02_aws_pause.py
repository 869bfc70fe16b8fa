"""Fault 2: the AWS endpoints stop answering for 10 s (emulators frozen with SIGSTOP, then SIGCONT).

One k6 load runs through four phases, each followed by a full recovery: Kinesis (kinesalite)
frozen, DynamoDB (dynalite) frozen, S3 (moto) frozen, then all three frozen together. The tests
below assert what each phase did; the last one reconciles the whole load exactly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from conftest import (
    PRODUCER_METRICS,
    Answer,
    Load,
    assert_exact,
    Sampler,
    backlog_age,
    in_thread,
    lag_gauge,
    note,
    paused,
    pid_of,
    post_events,
    probe_event,
    scrape,
    status_counts,
    verify,
    wait_caught_up,
    wait_gauge_low,
    write_acks,
)

PAUSE_S = 10
PHASES = [("kinesalite",), ("dynalite",), ("moto",), ("kinesalite", "dynalite", "moto")]


@dataclass
class Phase:
    names: tuple[str, ...]
    probe: Answer | None = None  # one event posted 3 s into the pause
    probe_id: str = ""
    back_after_s: float = 0.0  # resume -> the API answers 202 again
    back: Answer | None = None
    refused: float = 0.0  # 429 + 503 answers while frozen and just after
    other: float = 0.0  # answers other than 202/400/429/503 in that window
    backlog_peak: float = 0.0
    recovery_s: float = 0.0  # resume -> the consumer's backlog is younger than CAUGHT_UP_AGE_S
    gauge_peak_ms: float = 0.0  # max consumer_millis_behind_latest seen during the recovery
    consumers: set[int] = field(default_factory=set)

    @property
    def kinesis(self) -> bool:
        return "kinesalite" in self.names

    @property
    def label(self) -> str:
        return "+".join(self.names)


def run_phase(load: Load, phase: Phase) -> None:
    phase.consumers.add(pid_of("consumer"))
    before = status_counts(scrape(PRODUCER_METRICS))
    probe = probe_event()
    phase.probe_id = probe["event_id"]
    gauge = Sampler(lag_gauge)
    with paused(*phase.names):
        frozen_at = time.monotonic()
        time.sleep(3)
        answer = in_thread(post_events, [probe])
        if not phase.kinesis:
            # The stream is readable: watch the backlog grow while a store is frozen.
            while time.monotonic() - frozen_at < PAUSE_S:
                phase.backlog_peak = max(phase.backlog_peak, backlog_age())
                time.sleep(0.5)
        else:
            time.sleep(frozen_at + PAUSE_S - time.monotonic())
    resumed_at = time.monotonic()
    phase.probe = answer(30)
    # The API takes new events again.
    while True:
        phase.back = post_events([probe_event()])
        if phase.back.status == 202:
            break
        assert time.monotonic() - resumed_at < 30, f"API still answers {phase.back.status} 30 s after {phase.label} resumed"
        time.sleep(0.2)
    phase.back_after_s = time.monotonic() - resumed_at
    # The consumer catches up (its lag gauge is sampled all along).
    phase.recovery_s, worst = wait_caught_up(resumed_at)
    phase.gauge_peak_ms = gauge.stop()
    phase.backlog_peak = max(phase.backlog_peak, worst)
    time.sleep(1)
    after = status_counts(scrape(PRODUCER_METRICS))
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    phase.refused = delta.get("429", 0) + delta.get("503", 0)
    phase.other = sum(v for k, v in delta.items() if k not in ("202", "400", "429", "503"))
    phase.consumers.add(pid_of("consumer"))
    assert load.elapsed() < load.duration_s, f"the load ended before phase {phase.label} was over"


@pytest.fixture(scope="module")
def outage(own_resources):
    """Runs the load and the four phases; returns (load, phases, verdict, lag gauge after)."""
    phases = [Phase(names) for names in PHASES]
    with Load("aws-pause", duration_s=85, FAILED_RATE="0.5", CHECKS_RATE="0.5", P95_MS="5000", P99_MS="10000") as load:
        load.at(5)
        for phase in phases:
            run_phase(load, phase)
            time.sleep(2)
        load.finish()
    extra = write_acks(
        load.dir / "probe-acks.ndjson",
        [(p.probe_id, "page_view") for p in phases if p.probe and p.probe.status == 202]
        + [(p.back.body["event_ids"][0], "page_view") for p in phases if p.back],
    )
    gauge_after = wait_gauge_low()
    verdict = verify(load.acks, extra)
    return load, phases, verdict, gauge_after


def test_frozen_kinesis_gets_503_or_429_with_retry_after_never_202(outage):
    """Invariant: while Kinesis does not answer, the producer answers 429/503 with Retry-After
    and lists the events it could not persist as `unaccepted`, never in `event_ids` of a 202;
    it answers 202 again as soon as Kinesis is back."""
    load, phases, _, _ = outage
    for phase in (p for p in phases if p.kinesis):
        p = phase.probe
        assert p is not None and p.status in (429, 503), f"{phase.label}: probe answered {p and p.status} {p and p.body}"
        assert "retry-after" in p.headers, f"{phase.label}: no Retry-After on {p.status}"
        assert p.body.get("event_ids") == [], p.body
        assert [u["event_id"] for u in p.body.get("unaccepted", [])] == [phase.probe_id], p.body
        assert phase.refused > 0, f"{phase.label}: no 429/503 counted by the producer"
        assert phase.other == 0, f"{phase.label}: {phase.other} answers that were neither 202/400 nor 429/503"
    # Every 429/503 k6 saw carried Retry-After and accounted for every valid event.
    fails = load.check_fails(ignore=("status 202",))
    assert fails == {}, f"contract checks failed under the outage: {fails}"
    assert load.value("throttled_requests") > 0


def test_frozen_stores_do_not_stop_the_api(outage):
    """Invariant: with DynamoDB or S3 frozen (the consumer's stores), the producer keeps
    acknowledging events with 202: the outage only delays the consumer."""
    _, phases, _, _ = outage
    for phase in (p for p in phases if not p.kinesis):
        assert phase.probe is not None and phase.probe.status == 202, f"{phase.label}: {phase.probe}"
        assert phase.refused == 0, f"{phase.label}: {phase.refused} requests refused"
        assert phase.backlog_peak >= PAUSE_S / 2, f"{phase.label}: the consumer was not held up ({phase.backlog_peak:.1f} s)"


def test_consumer_backs_off_and_catches_up(outage):
    """Invariant: the consumer survives every outage without a restart (same pid throughout),
    catches up afterwards, its lag gauge (consumer_millis_behind_latest) shows a stall of its
    stores while it lasts, and returns to ~0."""
    _, phases, _, gauge_after = outage
    for phase in phases:
        assert len(phase.consumers) == 1, f"{phase.label}: the consumer restarted {phase.consumers}"
        assert phase.recovery_s < 60
    for phase in (p for p in phases if not p.kinesis):
        assert phase.gauge_peak_ms >= PAUSE_S * 1000 / 2, (
            f"{phase.label}: the lag gauge peaked at {phase.gauge_peak_ms:.0f} ms while the backlog reached "
            f"{phase.backlog_peak:.1f} s"
        )
    assert gauge_after <= 3000


def test_exact_after_outages(outage):
    """Invariant: after all four outages, every acknowledged event (k6's and the probes') is in
    the stream, the lake, DynamoDB and the PostgreSQL counts exactly once (verify exits 0)."""
    load, phases, verdict, gauge_after = outage
    assert_exact(verdict)
    for p in phases:
        note(
            f"pause {p.label} {PAUSE_S} s: probe {p.probe.status if p.probe else '-'}"
            f"{' Retry-After ' + p.probe.headers.get('retry-after', '-') if p.probe and p.probe.status != 202 else ''} "
            f"in {p.probe.seconds if p.probe else 0:.1f} s; {p.refused:.0f} requests answered 429/503; API 202 again "
            f"{p.back_after_s:.1f} s after resume; backlog peak {p.backlog_peak:.1f} s; caught up {p.recovery_s:.1f} s "
            f"after resume; lag gauge peak {p.gauge_peak_ms:.0f} ms"
        )
    note(
        f"pause (whole load): {load.line()}; verify OK {verdict.acknowledged} events in {verdict.seconds:.0f} s; "
        f"lag gauge after {gauge_after:.0f} ms"
    )
