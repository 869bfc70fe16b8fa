"""scripts/schedule.sh, the local schedule of the compactor and retention, with stand-in commands
that record their runs: what it runs, how often, and that SIGTERM stops it and a run in progress."""

import os
import signal
import subprocess
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "schedule.sh"


def stand_in(path: Path, log: Path, sleep: float = 0) -> Path:
    # `exec`: the stand-in dies of SIGTERM at once, as the real binaries do.
    path.write_text(f'#!/usr/bin/env bash\necho "$(basename "$0") $*" >> {log}\nexec sleep {sleep}\n')
    path.chmod(0o755)
    return path


def start(tmp_path: Path, compact_sleep: float = 0, **env) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "runs.log"
    compactor = stand_in(tmp_path / "compactor", log, compact_sleep)
    retention = stand_in(tmp_path / "retention", log)
    proc = subprocess.Popen(
        ["bash", str(SCRIPT)],
        env={**os.environ, "COMPACTOR": str(compactor), "RETENTION": str(retention), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, log


def runs(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_compacts_every_interval_and_runs_retention_at_its_own_pace(tmp_path):
    proc, log = start(tmp_path, COMPACT_EVERY_SECONDS="1", RETENTION_EVERY_SECONDS="3600")
    try:
        assert wait_for(lambda: runs(log).count("compactor --hours-back 24") >= 3), runs(log)
        assert runs(log)[:2] == ["compactor --hours-back 24", "retention "], "both run at once at start"
        assert runs(log).count("retention ") == 1, "retention waits its own interval"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "schedule stopped" in out


def test_sigterm_stops_the_loop_and_the_run_in_progress(tmp_path):
    proc, log = start(tmp_path, compact_sleep=60, COMPACT_EVERY_SECONDS="600")
    assert wait_for(lambda: runs(log) == ["compactor --hours-back 24"]), runs(log)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert time.monotonic() - started < 5, "the 60 s run was stopped, not waited for"
    assert "compactor exited 143" in out, out
    assert runs(log) == ["compactor --hours-back 24"], "nothing runs after SIGTERM"


def test_zero_turns_either_off(tmp_path):
    proc, log = start(tmp_path, COMPACT_EVERY_SECONDS="0", RETENTION_EVERY_SECONDS="0")
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=70)
    assert runs(log) == []
