"""Shared machinery of the fault tests: the local pipeline under a k6 load, the faults, the verifier.

Run them with `bash scripts/test-faults.sh` (it brings the pipeline up first). Everything here
targets 127.0.0.1 only; every load is bounded in rate and time; every process this suite stops
(SIGSTOP, SIGKILL) is one the local stack or the pipeline started, found by its pid file and
checked by its command line, and every SIGSTOP is paired with a SIGCONT in a `finally`.

A test passes only when `verify` (loadtest/src/main.rs) reconciles every store against the
API's acknowledgements exactly: every acknowledged event in the stream, the lake, DynamoDB and
the PostgreSQL counts, none of them twice.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for pylib

import bootstrap_resources as bootstrap  # noqa: E402  (scripts/: the local stack's resources)
from pylib import (  # noqa: E402
    CARGO_TARGET as TARGET,
    HOST,
    ROOT,
    env_float,
    env_int,
    env_sh,
    local_client,
    metric_max,
    metric_sum,
    run,
    scrape_metrics,
    wait_until,
)

RUN_DIR = ROOT / ".local" / "run"
VERIFY = TARGET / "debug" / "verify"
OUT = ROOT / "bench" / "out" / "faults"
API = f"http://{HOST}:3000"
# The local stack's site (config/sites.json): every request the suite makes carries its key.
SITE_KEY = os.environ.get("SITE_KEY", "pk_local_demo")
PRODUCER_METRICS = f"http://{HOST}:9101/metrics"
CONSUMER_METRICS = f"http://{HOST}:9102/metrics"

# The load every fault runs under: modest (2 shared cores), about 13.5 events per request.
RATE = env_int("FAULT_RATE", 40)
# The oldest record the consumer has not finished, in seconds, that counts as "caught up":
# one batch window (0.5 s) plus one batch's processing in the debug build, with some slack.
CAUGHT_UP_AGE_S = env_float("FAULT_CAUGHT_UP_AGE_S", 3.0)

# Background processes of the local stack and the pipeline: pid file name -> command-line marker.
MARKERS = {
    "kinesalite": "kinesalite.js",
    "dynalite": "dynalite.js",
    "moto": "moto_server",
    "producer": "producer-api",
    "consumer": "stream-consumer",
}
EMULATORS = ("kinesalite", "dynalite", "moto")

# Recorded by the tests, printed at the end of the session (the numbers for the report).
RESULTS: list[str] = []


def note(line: str) -> None:
    """Keeps one line for the end-of-session summary (and prints it for -s runs)."""
    RESULTS.append(line)
    print(line, flush=True)


# ------------------------------------------------------------------------------------------------
# Environment


_BASE_ENV: dict[str, str] | None = None


def base_env() -> dict[str, str]:
    """The process environment plus scripts/env.sh's local-stack variables (loopback only).

    The caller's AWS_* and resource variables are dropped first, so nothing this suite starts
    can reach anything but the local emulators.
    """
    global _BASE_ENV
    if _BASE_ENV is None:
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_")
            and k not in ("STREAM_NAME", "LAKE_BUCKET", "DYNAMODB_TABLE", "DATABASE_URL", "DATABASE_SECRET_ARN")
        }
        _BASE_ENV = env_sh(clean)
        for var in ("AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_S3"):
            assert _BASE_ENV[var].startswith(f"http://{HOST}:"), f"{var}={_BASE_ENV[var]} is not loopback"
        assert "@127.0.0.1:" in _BASE_ENV["DATABASE_URL"], _BASE_ENV["DATABASE_URL"]
        _BASE_ENV["CARGO_TARGET_DIR"] = str(TARGET)
    return dict(_BASE_ENV)


@dataclass
class Resources:
    """The suite's own stream, bucket, table and database, so that the verifier reads only what
    this suite produced (fast, and independent of whatever else the shared stack holds)."""

    stream: str
    bucket: str
    table: str
    database: str

    @classmethod
    def fresh(cls) -> "Resources":
        tag = uuid.uuid4().hex[:10]
        return cls(f"faults-{tag}", f"faults-{tag}", f"faults-{tag}", f"faults_{tag}")

    def renew(self) -> None:
        """New names, in place (everything reads RES at call time)."""
        self.__dict__.update(Resources.fresh().__dict__)

    def database_url(self) -> str:
        url = base_env()["DATABASE_URL"]
        assert "?" not in url, f"DATABASE_URL with parameters is not supported here: {url}"
        return url.rstrip("/").rsplit("/", 1)[0] + f"/{self.database}"

    def env(self) -> dict[str, str]:
        return {
            "STREAM_NAME": self.stream,
            "LAKE_BUCKET": self.bucket,
            "DYNAMODB_TABLE": self.table,
            "DATABASE_URL": self.database_url(),
        }


RES = Resources.fresh()


def stack_env(**overrides: str) -> dict[str, str]:
    """base_env() pointed at the suite's own resources, plus `overrides`."""
    env = base_env()
    env.update(RES.env())
    env.update(overrides)
    return env


def client(service: str):
    env = stack_env()
    url = env[f"AWS_ENDPOINT_URL_{'S3' if service == 's3' else service.upper()}"]
    return local_client(service, url, region=env["AWS_REGION"], read_timeout=60)


def psql(sql: str, url: str | None = None) -> list[list[str]]:
    """Runs one statement against the suite's database; rows as lists of strings."""
    out = run(
        ["psql", "-X", "-w", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", url or stack_env()["DATABASE_URL"], "-c", sql],
        timeout=30,
    )
    if out.returncode != 0:
        raise RuntimeError(f"psql failed: {out.stderr.strip()}")
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def base_psql(sql: str) -> list[list[str]]:
    """The same against the stack's default database (to create and drop the suite's own)."""
    return psql(sql, base_env()["DATABASE_URL"])


def safe_name(name: str) -> str:
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", name), name
    return name


# ------------------------------------------------------------------------------------------------
# Processes


def pid_of(name: str) -> int:
    """The pid of a local-stack/pipeline process from .local/run/<name>.pid, checked by command line."""
    f = RUN_DIR / f"{name}.pid"
    if not f.exists():
        pytest.fail(f"{f} is missing: is the pipeline up (bash scripts/up.sh)?")
    pid = int(f.read_text().strip())
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        pytest.fail(f"{name}: pid {pid} from {f} is not running")
    if MARKERS[name] not in cmdline:
        pytest.fail(f"{name}: pid {pid} is not ours ({cmdline!r})")
    return pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill -0; it is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def sigkill(name: str) -> int:
    """SIGKILLs one pipeline process (by its pid file) and waits until it is gone."""
    pid = pid_of(name)
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: alive(pid), lambda up: not up, timeout=10, interval=0.05,
        failure=lambda _: f"{name} pid {pid} survived SIGKILL for 10 s",
    )
    return pid


def pipeline(cmd: str, base: bool = False, **env: str) -> None:
    """scripts/pipeline.sh up|down with the already built binaries (no rebuild under load),
    pointed at the suite's resources (or, with base=True, at the stack's default ones)."""
    full = base_env() if base else stack_env()
    full.update(PIPELINE_SKIP_BUILD="1", **env)
    res = run(["bash", "scripts/pipeline.sh", cmd], env=full, timeout=120)
    assert res.returncode == 0, f"pipeline.sh {cmd} failed:\n{res.stdout}\n{res.stderr}"


def create_stream(name: str, shards: int = 2) -> None:
    kinesis = client("kinesis")
    kinesis.create_stream(StreamName=safe_name(name), ShardCount=shards)
    wait_stream_active(name)


def wait_stream_active(name: str) -> None:
    kinesis = client("kinesis")
    wait_until(
        lambda: kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"],
        lambda status: status == "ACTIVE", timeout=60, interval=0.1,
        failure=lambda _: f"stream {name} not ACTIVE after 60 s",
    )


def create_resources(res: Resources) -> None:
    create_stream(res.stream)
    client("s3").create_bucket(Bucket=res.bucket)
    # The table exactly as the local stack's (bootstrap's ensure_table): with forget's erasure
    # indexes, which every item write also writes, so each fault runs against the real cost.
    bootstrap.ensure_table(client("dynamodb"), safe_name(res.table))
    base_psql(f"CREATE DATABASE {safe_name(res.database)}")


def delete_resources(res: Resources) -> None:
    """Best effort: every step runs even when an earlier one fails."""
    steps = [
        lambda: client("kinesis").delete_stream(StreamName=res.stream, EnforceConsumerDeletion=True),
        lambda: client("dynamodb").delete_table(TableName=res.table),
        lambda: empty_and_delete_bucket(res.bucket),
        lambda: base_psql(f"DROP DATABASE IF EXISTS {safe_name(res.database)} WITH (FORCE)"),
    ]
    for step in steps:
        with contextlib.suppress(Exception):
            step()


def empty_and_delete_bucket(bucket: str) -> None:
    s3 = client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=bucket)


@contextlib.contextmanager
def paused(*names: str):
    """SIGSTOPs the named emulators for the duration of the block; SIGCONT always follows."""
    pids = [pid_of(n) for n in names]
    stopped = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def resume_all_emulators() -> None:
    """Safety net: SIGCONT every emulator of this checkout (harmless when running)."""
    for name in EMULATORS:
        f = RUN_DIR / f"{name}.pid"
        with contextlib.suppress(Exception):
            pid = int(f.read_text().strip())
            if MARKERS[name] in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(pid, signal.SIGCONT)


# ------------------------------------------------------------------------------------------------
# Metrics


# Prometheus text is parsed by pylib (prometheus_client); the tests use these names.
scrape = scrape_metrics
metric = metric_sum
gauge_max = metric_max


def status_counts(samples: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, ls), v in samples.items():
        if n == "producer_requests_total":
            status = dict(ls).get("status", "?")
            out[status] = out.get(status, 0) + v
    return out


# ------------------------------------------------------------------------------------------------
# Consumer progress


def checkpoints(stream: str) -> dict[str, tuple[str | None, bool]]:
    rows = psql(
        "SELECT shard_id, coalesce(sequence_number, ''), shard_closed FROM shard_checkpoints "
        f"WHERE stream_name = '{safe_name(stream)}'"
    )
    return {r[0]: (r[1] or None, r[2] == "t") for r in rows}


def backlog_age(stream: str | None = None) -> float:
    """Age in seconds of the oldest record the consumer has not checkpointed yet (0 when none).

    This is the lag that matters (how stale the stores are), read from the stream and the
    runner's checkpoints; it does not depend on the emulator's MillisBehindLatest.
    """
    stream = stream or RES.stream
    kinesis = client("kinesis")
    done = checkpoints(stream)
    oldest = 0.0
    now = datetime.now(timezone.utc)
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        sid = shard["ShardId"]
        seq, closed = done.get(sid, (None, False))
        if closed:
            continue
        args = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": seq} if seq else {
            "ShardIteratorType": "TRIM_HORIZON"
        }
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=sid, **args)["ShardIterator"]
        records = kinesis.get_records(ShardIterator=it, Limit=1)["Records"]
        if records:
            oldest = max(oldest, (now - records[0]["ApproximateArrivalTimestamp"]).total_seconds())
    return oldest


def wait_caught_up(since: float, stream: str | None = None, limit: float = 120.0) -> tuple[float, float]:
    """Polls until the backlog is younger than CAUGHT_UP_AGE_S. Returns (seconds after `since`
    (a time.monotonic()) it took, the largest backlog age seen meanwhile)."""
    ages: list[float] = []

    def probe() -> float:
        ages.append(backlog_age(stream))
        return ages[-1]

    wait_until(
        probe, lambda age: age <= CAUGHT_UP_AGE_S, timeout=limit, interval=0.5, start=since,
        failure=lambda age: f"consumer still {age:.1f} s behind after {limit:.0f} s",
    )
    return time.monotonic() - since, max(ages)


def wait_gauge_low(limit_ms: float = CAUGHT_UP_AGE_S * 1000, within: float = 30.0) -> float:
    """Waits until max(consumer_millis_behind_latest) <= limit_ms; returns the value."""
    return wait_until(
        lag_gauge, lambda value: value <= limit_ms, timeout=within, interval=0.5,
        failure=lambda value: f"consumer_millis_behind_latest still {value:.0f} ms after {within:.0f} s",
    )


# ------------------------------------------------------------------------------------------------
# The API, directly


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict
    seconds: float


def post_events(events: list[dict], timeout: float = 15.0) -> Answer:
    req = urllib.request.Request(
        f"{API}/events",
        data=json.dumps(events).encode(),
        headers={"content-type": "application/json", "x-site-key": SITE_KEY},
        method="POST",
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            status, headers, raw = res.status, dict(res.headers), res.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, dict(e.headers), e.read()
    body = json.loads(raw) if raw else {}
    return Answer(status, {k.lower(): v for k, v in headers.items()}, body, time.monotonic() - started)


def probe_event() -> dict:
    return {"event_id": str(uuid.uuid4()), "event_type": "page_view", "anonymous_id": "fault-probe"}


def write_acks(path: Path, acks: list[tuple[str, str]]) -> Path:
    """An extra ack file in the verifier's format, for events acknowledged outside k6."""
    with path.open("w") as f:
        for event_id, event_type in acks:
            f.write(json.dumps({"ack": event_id, "t": event_type}) + "\n")
    return path


# ------------------------------------------------------------------------------------------------
# The load


class Load:
    """k6's sustained mix at RATE requests/s in the background, with an ack log.

    Thresholds are relaxed only where the fault makes failures expected (429/503 answers,
    slow answers while something is frozen); every check of the response contract still runs
    and is asserted on by the tests through `check_fails()`.
    """

    def __init__(self, name: str, duration_s: int, rate: int = RATE, **knobs: str):
        self.name = name
        self.dir = OUT / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.acks = self.dir / "acks.ndjson"
        self.duration_s = duration_s
        self.env = stack_env(
            RATE=str(rate),
            DURATION=f"{duration_s}s",
            ACK_LOG_FILE=str(self.acks),
            SUMMARY_DIR=str(self.dir),
            PRE_VUS="40",
            MAX_VUS="300",
            REQ_TIMEOUT="15s",
            **knobs,
        )
        self.proc: subprocess.Popen | None = None
        self.summary: dict = {}
        self.rc: int | None = None

    def __enter__(self) -> "Load":
        self.log = (self.dir / "k6.log").open("w")
        self.proc = subprocess.Popen(
            ["bash", "scripts/k6.sh", "run", "--quiet", "loadtest/k6/sustained.js"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.t0 = time.monotonic()
        return self

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def at(self, seconds: float) -> None:
        """Sleeps until `seconds` after the load started."""
        delay = self.t0 + seconds - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def finish(self) -> dict:
        assert self.proc is not None
        self.rc = self.proc.wait(timeout=self.duration_s + 90)
        self.log.close()
        self.summary = json.loads((self.dir / "sustained-summary.json").read_text())
        return self.summary

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
        if not self.log.closed:
            self.log.close()

    # --- reading the summary

    def value(self, name: str, stat: str = "count") -> float:
        return float(self.summary.get("metrics", {}).get(name, {}).get("values", {}).get(stat, 0) or 0)

    def checks(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}

        def walk(group: dict) -> None:
            checks = group.get("checks") or []
            for c in checks.values() if isinstance(checks, dict) else checks:
                out[c["name"]] = (c["passes"], c["fails"])
            for g in (group.get("groups") or {}).values() if isinstance(group.get("groups"), dict) else group.get("groups") or []:
                walk(g)

        walk(self.summary.get("root_group", {}))
        return out

    def check_fails(self, ignore: tuple[str, ...] = ()) -> dict[str, int]:
        return {n: f for n, (_, f) in self.checks().items() if f and n not in ignore}

    def line(self) -> str:
        return (
            f"{self.value('http_reqs'):.0f} requests, {self.value('accepted_events'):.0f} events acknowledged, "
            f"{self.value('throttled_requests'):.0f} answered 429/503 ({self.value('unaccepted_events'):.0f} events unaccepted), "
            f"p99 {self.value('http_req_duration', 'p(99)'):.0f} ms"
        )


# ------------------------------------------------------------------------------------------------
# The verifier


@dataclass
class Verified:
    rc: int
    out: str
    err: str
    seconds: float
    acknowledged: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    caught_up_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.rc == 0 and "verify: OK" in self.out and "MISMATCH" not in self.err

    def explain(self) -> str:
        return f"verify exit {self.rc}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def verify(*ack_files: Path, stream: str | None = None, wait: int = 180, name: str = "verify",
           forgotten: Path | None = None) -> Verified:
    """Runs `verify --wait <wait> <acks>...` against `stream` and parses what it printed.
    `forgotten`: an ack file of events erased by forget (test_07), which the lake and DynamoDB
    must no longer hold while PostgreSQL's counts still include them."""
    started = time.monotonic()
    extra = ["--forgotten", str(forgotten)] if forgotten else []
    res = run(
        [str(VERIFY), "--wait", str(wait), *extra, *map(str, ack_files)],
        env=stack_env(STREAM_NAME=stream or RES.stream),
        timeout=wait + 300,
    )
    v = Verified(res.returncode, res.stdout, res.stderr, time.monotonic() - started)
    (Path(ack_files[0]).parent / f"{name}.txt").write_text(v.explain())
    if m := re.search(r"verify: OK \S+ (\d+) acknowledged events", v.out):
        v.acknowledged = int(m.group(1))
    if m := re.search(r"^quarantined\s+\d+\s*(.*)$", v.out, re.M):
        v.quarantined = {k: int(n) for k, n in re.findall(r"(\w+)=(\d+)", m.group(1))}
    if m := re.search(r"caught up after ([\d.]+) s", v.out):
        v.caught_up_s = float(m.group(1))
    return v


def assert_exact(v: Verified) -> None:
    """Nothing lost, nothing double-counted: the verifier's exit code and its verdict line."""
    assert v.ok, v.explain()
    assert v.acknowledged > 0, v.explain()


# ------------------------------------------------------------------------------------------------
# Session


@pytest.fixture(scope="session", autouse=True)
def pipeline_up():
    """The pipeline must be up (scripts/test-faults.sh runs scripts/up.sh first) and the
    verifier built. Afterwards the pipeline is back on the stack's default resources and every
    emulator runs (SIGCONT), whatever happened."""
    assert VERIFY.exists(), f"{VERIFY} is missing: cargo build -p loadtest --bin verify"
    for name in MARKERS:
        pid_of(name)
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        yield
    finally:
        resume_all_emulators()
        with contextlib.suppress(AssertionError):
            pipeline("down")
        pipeline("up", base=True)


@pytest.fixture(scope="module", autouse=True)
def own_resources(pipeline_up):
    """Each test module (one fault class) runs the pipeline on a stream, bucket, table and
    database of its own, so the verifier reads only what that fault produced (quick, and a
    failure cannot leak into the next verdict). They are deleted afterwards (FAULT_KEEP=1 keeps
    them for a post-mortem)."""
    RES.renew()
    create_resources(RES)
    try:
        pipeline("down")
        pipeline("up")
        yield RES
    finally:
        resume_all_emulators()
        with contextlib.suppress(AssertionError):
            pipeline("down")
        if os.environ.get("FAULT_KEEP") != "1":
            delete_resources(RES)


def pytest_terminal_summary(terminalreporter):
    if RESULTS:
        terminalreporter.section("fault results")
        for line in RESULTS:
            terminalreporter.write_line(line)


def in_thread(fn, *args):
    """Runs fn(*args) in a thread; returns a callable that joins and returns its result."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # re-raised in the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout: float = 60.0):
        t.join(timeout)
        assert not t.is_alive(), f"{fn.__name__} did not finish in {timeout} s"
        if "error" in box:
            raise box["error"]
        return box["value"]

    return join


class Sampler:
    """Calls fn() every `interval` seconds in a thread and keeps the largest value."""

    def __init__(self, fn, interval: float = 0.5):
        self.fn, self.interval, self.peak = fn, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, float(self.fn()))
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(10)
        return self.peak


def lag_gauge() -> float:
    """max(consumer_millis_behind_latest) right now, in ms."""
    return gauge_max(scrape(CONSUMER_METRICS), "consumer_millis_behind_latest")


class Proxy:
    """A TCP proxy 127.0.0.1:<port> -> 127.0.0.1:<target> that can refuse service: `refuse()`
    closes its listener (new connections are refused) and resets every open connection, like an
    endpoint that went away; `accept()` listens on the same port again."""

    def __init__(self, target: int):
        import asyncio

        self.asyncio = asyncio
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.conns: set = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = 0
        self.accept()

    def _call(self, coro):
        return self.asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(self, reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, client_r, client_w) -> None:
        try:
            up_r, up_w = await self.asyncio.open_connection(HOST, self.target)
        except OSError:
            client_w.transport.abort()
            return
        pair = (client_w.transport, up_w.transport)
        self.conns.add(pair)
        try:
            await self.asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))
        finally:
            self.conns.discard(pair)

    async def _start(self) -> None:
        self.server = await self.asyncio.start_server(self._handle, HOST, self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for pair in list(self.conns):
            for transport in pair:
                transport.abort()  # RST, not FIN: the peer sees "connection reset"
        self.conns.clear()

    def accept(self) -> None:
        self._call(self._start())

    def refuse(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self.refuse()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"
