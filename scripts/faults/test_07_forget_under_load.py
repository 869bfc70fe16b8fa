"""Fault 7: visitors are forgotten (issue #23) while the load for everyone else keeps flowing,
and the `forget` runs doing it are SIGKILLed mid-run, once anywhere and once while S3 is frozen,
then resumed, twice at once."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from conftest import (
    OUT,
    RES,
    TARGET,
    Load,
    alive,
    assert_exact,
    client,
    note,
    paused,
    post_events,
    psql,
    stack_env,
    verify,
    wait_caught_up,
    wait_gauge_low,
    write_acks,
)
from pylib import run, wait_until

FORGET = TARGET / "debug" / "forget"
# The local stack's one site (config/sites.json): the events the suite posts are stored under it.
SITE = "local-demo"
EVENT_TYPES = ("page_view", "click", "search", "signup")


@dataclass
class Visitor:
    """One visitor of the scenario and the events the API acknowledged for it."""

    anonymous_id: str
    user_id: str | None = None
    events: dict[str, str] = field(default_factory=dict)  # event_id -> event_type

    def post(self, n: int, with_user_id: bool = True) -> None:
        """Posts n events of this visitor in one request; all must be acknowledged."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        batch = []
        for i in range(n):
            event_type = EVENT_TYPES[i % len(EVENT_TYPES)]
            event = {"event_id": str(uuid.uuid4()), "event_type": event_type, "occurred_at": now,
                     "anonymous_id": self.anonymous_id, "url": "https://shop.example/forget"}
            if event_type == "search":
                event["properties"] = {"query": "forget me"}  # the search plan warns without one
            if self.user_id and with_user_id:
                event["user_id"] = self.user_id
            batch.append(event)
        answer = post_events(batch)
        assert answer.status == 202 and len(answer.body.get("event_ids", [])) == n, answer
        for event in batch:
            self.events[event["event_id"]] = event["event_type"]


def forget_env() -> dict[str, str]:
    """The suite's stores (its bucket, table and database) for the forget binary; the database by
    URL, not by the stack's secret (which names the default database)."""
    env = stack_env()
    env.pop("DATABASE_SECRET_ARN", None)
    return env


def forget(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return run([str(FORGET), *args], env=forget_env(), timeout=timeout)


def json_lines(text: str) -> list[dict]:
    """The command's own JSON lines, without its log lines (service_kit's JSON logs go to stdout
    as well, each with a level and a timestamp)."""
    lines = [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]
    return [obj for obj in lines if not ("level" in obj and "timestamp" in obj)]


def start_forget_run(name: str) -> tuple[subprocess.Popen, Path]:
    log = OUT / "forget-under-load" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([str(FORGET), "run"], env=forget_env(), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, log


def sigkill_run(proc: subprocess.Popen) -> bool:
    """SIGKILLs a forget run this test started (by its Popen, never by name); True when it was
    still running, i.e. the kill interrupted it."""
    running = proc.poll() is None and alive(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return running


def requests_started() -> int:
    return int(psql("SELECT count(*) FROM erasure_requests WHERE started_at IS NOT NULL")[0][0])


def lake_rows(ids: dict[str, set[str]]) -> tuple[set[str], list[str]]:
    """Reads every Parquet object under events/ of the suite's bucket (DuckDB over local copies):
    (the distinct event IDs of rows that belong to a forgotten visitor — site and anonymous_id or
    user_id as the requests name them — and the event ID of every row in the lake)."""
    s3 = client("s3")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=RES.bucket, Prefix="events/"):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(".parquet"):
                    path = Path(tmp) / f"{len(paths)}.parquet"
                    s3.download_file(RES.bucket, obj["Key"], str(path))
                    paths.append(str(path))
        if not paths:
            return set(), []
        db = duckdb.connect()
        rows = db.execute(
            "SELECT event_id::VARCHAR, site, anonymous_id, user_id FROM read_parquet(?, union_by_name = true)", [paths]
        ).fetchall()
    # A row without a site (a file from before sites) counts too: nothing may hide an ID.
    forgotten = {
        event_id for event_id, site, anonymous_id, user_id in rows
        if site in (SITE, None) and (anonymous_id in ids["anonymous_id"] or user_id in ids["user_id"])
    }
    return forgotten, [r[0] for r in rows]


def dynamo_items(ids: dict[str, set[str]]) -> set[str]:
    """The event IDs of DynamoDB items of forgotten visitors, by a full scan (forget finds them
    through the lake rows it erases; this does not trust the lake)."""
    ddb = client("dynamodb")
    found: set[str] = set()
    for page in ddb.get_paginator("scan").paginate(TableName=RES.table):
        for item in page["Items"]:
            site = item.get("site", {}).get("S")
            anonymous_id = item.get("anonymous_id", {}).get("S")
            user_id = item.get("user_id", {}).get("S")
            if site in (SITE, None) and (anonymous_id in ids["anonymous_id"] or user_id in ids["user_id"]):
                found.add(item["event_id"]["S"])
    return found


def landed(event_ids: set[str]) -> bool:
    """Every one of these events has its DynamoDB item and its lake row."""
    ddb = client("dynamodb")
    keys = [{"event_id": {"S": e}} for e in event_ids]
    have: set[str] = set()
    for i in range(0, len(keys), 100):
        chunk = {RES.table: {"Keys": keys[i:i + 100], "ConsistentRead": True}}
        while chunk:
            got = ddb.batch_get_item(RequestItems=chunk)
            have |= {item["event_id"]["S"] for item in got["Responses"].get(RES.table, [])}
            chunk = got.get("UnprocessedKeys") or {}
    if have != event_ids:
        return False
    _, lake = lake_rows({"anonymous_id": set(), "user_id": set()})
    return event_ids <= set(lake)


def visitor_sha256(kind: str, site: str, value: str) -> str:
    # schemas/migrations/0011_erasure.sql: hex SHA-256 of "<id_kind>\n<site>\n<ID>".
    return hashlib.sha256(f"{kind}\n{site}\n{value}".encode()).hexdigest()


def test_forget_under_load_erases_exactly_the_forgotten_visitors_and_resumes_after_sigkill():
    """Invariant: while events of other visitors keep flowing, forgetting three visitors (two by
    anonymous_id, one by user_id) leaves no DynamoDB item and no lake row of theirs, however often
    the forget run is SIGKILLed (once anywhere, once blocked on frozen stores) and however many
    runs resume it at once; every other acknowledged event is stored exactly once (verify
    exits 0 with the forgotten events set apart: PostgreSQL's anonymous counts keep them, the
    lake and DynamoDB must not); each request's audit row keeps only the ID's hash, with what it
    removed; a straggler arriving after a request completed is removed by filing it again; and a
    run with nothing pending removes nothing."""
    assert FORGET.exists(), f"{FORGET} is missing: cargo build -p lake-tools --bin forget"
    usage = run([str(Path(TARGET) / "debug" / "verify"), "--help"], timeout=30)
    assert "--forgotten" in usage.stdout + usage.stderr, (
        "verify has no --forgotten option: the lake and DynamoDB must leave out forgotten events that "
        "PostgreSQL's counts keep (scripts/faults/README.md, test_07)")

    tag = uuid.uuid4().hex[:8]
    v1 = Visitor(f"forget-a1-{tag}")
    v2 = Visitor(f"forget-a2-{tag}")
    v3 = Visitor(f"forget-a3-{tag}", user_id=f"forget-u3-{tag}")
    forgotten_ids = {"anonymous_id": {v1.anonymous_id, v2.anonymous_id}, "user_id": {v3.user_id}}
    # v3 before logging in: its anonymous_id only. A request by user_id does not reach it, so
    # these events stay (in the ordinary acks) and must still be there at the end.
    v3_anonymous = Visitor(v3.anonymous_id)
    kills: list[str] = []

    with Load("forget-under-load", duration_s=60) as load:
        # The chosen visitors' events, a request each second, so they land in several batches
        # and in lake objects shared with other visitors' rows.
        for second in range(3, 11):
            load.at(second)
            v1.post(4)
            v2.post(3)
            v3.post(3)
            if second % 4 == 0:
                v3_anonymous.post(2)
        chosen = set(v1.events) | set(v2.events) | set(v3.events) | set(v3_anonymous.events)
        wait_until(lambda: landed(chosen), bool, timeout=60, interval=2,
                   failure=lambda _: "the chosen visitors' events did not land in DynamoDB and the lake in 60 s")
        landed_at = load.elapsed()

        # The requests, while other visitors' events keep flowing; one names a site that has no
        # such visitor, so it must find and remove nothing.
        filed = {}
        for kind, visitor, site in (("anonymous_id", v1, SITE), ("anonymous_id", v2, SITE),
                                    ("user_id", v3, SITE), ("anonymous_id", v1, f"other-site-{tag}")):
            value = getattr(visitor, kind)
            res = forget("request", "--site", site, f"--{kind.replace('_', '-')}", value)
            assert res.returncode == 0, res.stdout + res.stderr
            line = json_lines(res.stdout)
            assert len(line) == 1 and isinstance(line[0].get("request"), int), res.stdout
            filed[line[0]["request"]] = (kind, site, value, visitor)
        assert len(filed) == 4

        # Kill 1: wherever the run is once it has begun working on a request.
        first, _ = start_forget_run("run-killed-anywhere")
        wait_until(lambda: (first.poll() is not None) or requests_started() > 0, bool, timeout=60, interval=0.02,
                   failure=lambda _: "the first forget run started no request in 60 s")
        interrupted = [sigkill_run(first)]
        kills.append("anywhere: " + ("interrupted" if interrupted[-1] else f"had already exited {first.returncode}"))

        # Kill 2: with S3 and DynamoDB frozen, a run that has anything left to erase blocks on its
        # first call to either (a Query, a delete, a lake read, write or delete) and dies there.
        left = int(psql("SELECT count(*) FROM erasure_requests WHERE completed_at IS NULL")[0][0])
        with paused("moto", "dynalite"):
            second, _ = start_forget_run("run-killed-stores-frozen")
            time.sleep(4)
            interrupted.append(sigkill_run(second))
        kills.append(f"stores frozen, {left} requests pending: " + (
            "interrupted" if interrupted[-1] else f"had already exited {second.returncode}"))
        assert any(interrupted), f"neither SIGKILL interrupted a forget run: {kills}"
        killed_at = load.elapsed()
        assert killed_at < load.duration_s, "the kills came after the load: lower FAULT_RATE or the chosen events"

        # Two runs at once resume what the killed ones left; neither may fail.
        runs = [start_forget_run(f"run-resume-{n}") for n in (1, 2)]
        for proc, log in runs:
            assert proc.wait(timeout=300) == 0, f"a resuming forget run failed:\n{log.read_text()}"
        summaries = [json_lines(log.read_text())[-1] for _, log in runs]
        for summary in summaries:
            assert {"requests", "completed", "dynamo_items_removed", "lake_rows_removed",
                    "lake_objects_rewritten"} <= set(summary), summary
        resumed_at = load.elapsed()
        load.finish()

    assert load.check_fails() == {}, "forget touches neither the producer nor the stream: every contract check must pass"
    pending = psql("SELECT count(*) FROM erasure_requests WHERE completed_at IS NULL")[0][0]
    assert pending == "0", f"{pending} requests still pending after the resuming runs"

    # A straggler: an event of a forgotten visitor that arrives after its request completed is
    # stored (the completed request kept no ID to look for) and removed by filing it again.
    v2.post(1)
    straggler = set(v2.events) - chosen
    wait_until(lambda: landed(straggler), bool, timeout=60, interval=1,
               failure=lambda _: "the straggler did not land in 60 s")
    assert dynamo_items(forgotten_ids) == straggler
    again = forget("request", "--site", SITE, "--anonymous-id", v2.anonymous_id)
    assert again.returncode == 0, again.stdout + again.stderr
    refiled = json_lines(again.stdout)[0]["request"]
    assert refiled not in filed, "a completed request is not pending: filing it again is a new request"
    straggler_run = forget("run")
    assert straggler_run.returncode == 0, straggler_run.stdout + straggler_run.stderr
    swept = json_lines(straggler_run.stdout)[-1]
    assert (swept["requests"], len(swept["completed"]), swept["dynamo_items_removed"], swept["lake_rows_removed"]) == (1, 1, 1, 1), swept

    wait_caught_up(time.monotonic())
    lag = wait_gauge_low()

    # Nothing of the forgotten visitors is left in the lake or DynamoDB; the event of v3 sent
    # before it logged in is (the verifier below checks it with the other kept events).
    forgotten_events = {**v1.events, **v2.events, **v3.events}
    in_lake, lake = lake_rows(forgotten_ids)
    assert in_lake == set(), f"{len(in_lake)} lake rows of forgotten visitors remain"
    assert dynamo_items(forgotten_ids) == set(), "DynamoDB items of forgotten visitors remain"
    assert set(v3_anonymous.events) <= set(lake), "forgetting v3 by user_id removed its events without one"

    # The audit: every request completed, the raw ID gone, its hash kept, what each store lost.
    rows = psql(
        "SELECT id, site, id_kind, visitor IS NULL, visitor_sha256, completed_at IS NOT NULL, "
        "dynamo_items_removed, lake_rows_removed, lake_objects_rewritten FROM erasure_requests ORDER BY id")
    audit = {int(r[0]): r for r in rows}
    assert set(audit) == set(filed) | {refiled}
    totals = [0, 0, 0]
    for request, (kind, site, value, visitor) in filed.items():
        _, a_site, a_kind, erased, sha, completed, dynamo, lake_removed, objects = audit[request]
        assert (a_site, a_kind, erased, completed) == (site, kind, "t", "t"), audit[request]
        assert sha == visitor_sha256(kind, site, value)
        n = len(visitor.events) - (1 if visitor is v2 else 0)  # the straggler came later
        if site == SITE:
            # A killed run may have deleted items or swapped objects without committing their
            # counts, and an object shared by two visitors is rewritten once for both, so one
            # request's counts are at most its visitor's events; together they are not zero.
            assert int(dynamo) <= n and int(lake_removed) <= n, audit[request]
            assert int(dynamo) + int(lake_removed) > 0, f"request {request} says it removed nothing: {audit[request]}"
            totals = [t + int(x) for t, x in zip(totals, (dynamo, lake_removed, objects))]
        else:
            assert (dynamo, lake_removed, objects) == ("0", "0", "0"), f"the other site's request removed {audit[request]}"
    assert all(t > 0 for t in totals), f"items, rows and objects removed by the three requests: {totals}"
    raw = [value for _, _, value, _ in filed.values()]
    leaked = psql("SELECT t::text FROM erasure_requests t")
    assert not [r for r in leaked if any(v in r[0] for v in raw)], "a raw visitor ID is still in erasure_requests"

    # Nothing pending: a run removes nothing and fails nothing.
    idle = forget("run")
    assert idle.returncode == 0, idle.stdout + idle.stderr
    nothing = json_lines(idle.stdout)[-1]
    assert (nothing["requests"], nothing["dynamo_items_removed"], nothing["lake_rows_removed"],
            nothing["lake_objects_rewritten"]) == (0, 0, 0, 0), nothing
    status = json_lines(forget("status").stdout)
    assert len(status) == len(audit) and all(s.get("completed_at") for s in status), status
    assert not [s for s in status if any(v in json.dumps(s) for v in raw)], "forget status shows a raw ID"

    # Everything else reconciles exactly: every acknowledged event on the stream; once in the
    # lake and DynamoDB unless forgotten, and then in neither; PostgreSQL's counts (anonymous,
    # kept on purpose) include the forgotten events.
    extra = write_acks(load.dir / "acks-visitors.ndjson",
                       [(e, t) for e, t in {**v3_anonymous.events, **forgotten_events}.items()])
    forgotten_file = write_acks(load.dir / "forgotten.ndjson", list(forgotten_events.items()))
    v = verify(load.acks, extra, forgotten=forgotten_file)
    assert_exact(v)
    note(
        f"forget under load: {load.line()}; {len(forgotten_events)} events of 3 visitors forgotten "
        f"(landed {landed_at:.0f} s into the load, killed by {killed_at:.0f} s, resumed and done at {resumed_at:.0f} s); "
        f"kills: {'; '.join(kills)}; "
        f"resuming runs {[(len(s['completed']), s['dynamo_items_removed'], s['lake_rows_removed']) for s in summaries]} "
        f"(completed, items, rows); straggler removed by a second request; verify OK {v.acknowledged} events; "
        f"lag gauge now {lag:.0f} ms"
    )
