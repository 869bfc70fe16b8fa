"""Helpers shared by the project's Python tools and tests, so that each piece of logic is written once.

Who imports it, and how it is found: scripts/*.py run as `.local/venv/bin/python scripts/X.py`, so
Python puts scripts/ first on sys.path and `import pylib` just works; scripts/tests and
scripts/faults put scripts/ on sys.path in their conftest.py.

  paths        ROOT (the repository), CARGO_TARGET (where cargo builds, as the shell scripts say)
  environment  env_str, env_int, env_float (a variable that is unset or empty means the default);
               env_sh (the environment scripts/env.sh gives, as a dict)
  processes    run (subprocess.run from the repository root, output captured as text)
  waiting      wait_until (poll a probe until it says done, or fail after a deadline);
               stop_on_signals (SIGTERM/SIGINT end a sampling loop cleanly)
  local AWS    local_endpoint, local_client (boto3 against the loopback emulators, dummy keys)
  metrics      parse_metrics, read_metrics, scrape_metrics (Prometheus text, parsed by
               prometheus_client), series_delta, metric_sum, metric_max, bucket_quantile

Third-party packages (boto3, prometheus_client; both in scripts/requirements/stack.txt) are
imported inside the functions that use them: the module itself needs only the standard library.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable, TypeVar

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"

T = TypeVar("T")

# ------------------------------------------------------------------------------------------------
# Environment


def env_str(name: str, default: str) -> str:
    """$name, or `default` when it is unset or empty (the shell's ${name:-default})."""
    return os.environ.get(name) or default


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


# The cargo target directory every script uses (${CARGO_TARGET_DIR:-~/.cache/...} in the shell).
CARGO_TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache" / "web-analytics-pipeline" / "target")


def env_sh(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment after `source scripts/env.sh` in bash (with `set -eu`, so an unset
    variable in env.sh is an error), starting from `env` (default: this process's environment)."""
    out = subprocess.run(
        ["bash", "-c", "set -eu; source scripts/env.sh; env -0"],
        cwd=ROOT,
        env=os.environ if env is None else env,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


# ------------------------------------------------------------------------------------------------
# Processes and waiting


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(cmd) from the repository root, stdout and stderr captured as text, stdin
    closed; keyword arguments (env, timeout, check, cwd, ...) are passed on and win."""
    options = {"cwd": ROOT, "capture_output": True, "text": True, "stdin": subprocess.DEVNULL}
    return subprocess.run(cmd, **{**options, **kwargs})


def wait_until(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float,
    failure: Callable[[T], str],
    start: float | None = None,
) -> T:
    """Calls probe() every `interval` seconds until done(value), and returns that value.

    After `timeout` seconds from `start` (a time.monotonic(); default: now) raises
    TimeoutError(failure(last value)).
    """
    deadline = (time.monotonic() if start is None else start) + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(failure(value))
        time.sleep(interval)


# ------------------------------------------------------------------------------------------------
# The local AWS emulators


def local_endpoint(port_var: str, default_port: int) -> str:
    """http://127.0.0.1:<$port_var or default_port>: never anything but loopback."""
    return f"http://{HOST}:{env_int(port_var, default_port)}"


def local_client(service: str, endpoint_url: str, region: str = "us-east-1", read_timeout: float = 30, **config):
    """A boto3 client for `service` at `endpoint_url` with the emulators' dummy credentials, so
    the caller's real AWS profile is never used. `config` goes to botocore's Config (e.g.
    s3={"addressing_style": "path"})."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        aws_session_token=None,
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3, read_timeout=read_timeout, **config
        ),
    )


# ------------------------------------------------------------------------------------------------
# Prometheus metrics
#
# Samples: {(sample name, frozenset of (label, value) pairs): value}, one entry per series, the
# sample names as exposed (a histogram gives <name>_bucket with an "le" label, <name>_sum and
# <name>_count; a counter its <name>_total).

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Prometheus text exposition format -> Samples (prometheus_client's parser; a malformed
    line raises ValueError)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def read_metrics(path: str | Path) -> Samples:
    """Samples of a file holding a /metrics response (e.g. saved with curl)."""
    return parse_metrics(Path(path).read_text())


def scrape_metrics(url: str, timeout: float = 5.0) -> Samples:
    """Samples of a live /metrics endpoint."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse_metrics(response.read().decode())


def series_delta(before: Samples, after: Samples) -> Samples:
    """after - before for every series of `after` (a series missing before counts from 0)."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def metric_sum(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(value for (n, ls), value in samples.items() if n == name and want <= ls)


def metric_max(samples: Samples, name: str) -> float:
    """Largest sample called `name` (a gauge across its label sets); 0.0 when there is none."""
    return max((value for (n, _), value in samples.items() if n == name), default=0.0)


def bucket_quantile(samples: Samples, histogram: str, q: float) -> float | None:
    """Upper bound of the first bucket of `histogram` (all label sets added up) that holds the
    q-quantile of its observations, as float (math.inf for "+Inf"); None without observations."""
    buckets: dict[float, float] = {}
    for (n, labels), count in samples.items():
        if n == f"{histogram}_bucket":
            le = float(dict(labels)["le"])
            buckets[le] = buckets.get(le, 0.0) + count
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] == 0:
        return None
    target = q * ordered[-1][1]
    return next((le for le, count in ordered if count >= target), None)


def stop_on_signals():
    """Makes SIGTERM and SIGINT only raise a flag, and returns the flag's reader: a sampling loop
    checks it and ends cleanly, keeping what it recorded, instead of dying mid-write."""
    import signal

    raised = [False]

    def on_signal(_signum, _frame):
        raised[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return lambda: raised[0]
