"""scripts/forget.sh (`make forget`), without cargo or the stack: the arguments are checked before
anything is built, and a stand-in `forget` binary (FORGET_SKIP_BUILD=1, a CARGO_TARGET_DIR of
the test's own) records what the script runs, in which order and with which environment."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pylib import ROOT

SCRIPT = ROOT / "scripts" / "forget.sh"

# Logs its arguments and the variables forget reads, one line per call; `run` exits with
# $FAKE_RUN_STATUS.
FAKE = """#!/usr/bin/env bash
echo "$* | LAKE_BUCKET=$LAKE_BUCKET DYNAMODB_TABLE=$DYNAMODB_TABLE DATABASE_URL=$DATABASE_URL SECRET=${DATABASE_SECRET_ARN:-unset}" >> "$FAKE_LOG"
case "$1" in
  request) echo '{"request": 7}' ;;
  run) echo '{"requests": 1, "completed": 1}'; exit "${FAKE_RUN_STATUS:-0}" ;;
  status) echo '{"id": 7}' ;;
esac
"""


def forget(tmp_path: Path, run_status: int = 0, **request: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    target = tmp_path / "target"
    (target / "debug").mkdir(parents=True, exist_ok=True)
    fake = target / "debug" / "forget"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    env.update(CARGO_TARGET_DIR=str(target), FORGET_SKIP_BUILD="1", FAKE_LOG=str(log),
               FAKE_RUN_STATUS=str(run_status), **request)
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls


def test_an_anonymous_id_is_requested_then_run_then_the_audit_printed(tmp_path):
    proc, calls = forget(tmp_path, SITE="local-demo", ANONYMOUS_ID="a-1")
    assert proc.returncode == 0, proc.stderr
    assert [c.split(" | ")[0] for c in calls] == ["request --site local-demo --anonymous-id a-1", "run", "status"]
    # scripts/env.sh's stores, and the database by URL rather than by secret.
    assert calls[0].split(" | ")[1] == ("LAKE_BUCKET=analytics-lake DYNAMODB_TABLE=analytics-events "
                                        "DATABASE_URL=postgres://postgres@127.0.0.1:5432/analytics SECRET=unset")
    assert proc.stdout.splitlines() == ['{"request": 7}', '{"requests": 1, "completed": 1}', '{"id": 7}']


def test_a_user_id_is_requested_by_its_own_flag(tmp_path):
    proc, calls = forget(tmp_path, SITE="local-demo", USER_ID="customer 9")
    assert proc.returncode == 0, proc.stderr
    assert calls[0].split(" | ")[0] == "request --site local-demo --user-id customer 9"


def test_without_an_id_pending_requests_are_processed_and_nothing_filed(tmp_path):
    proc, calls = forget(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [c.split(" | ")[0] for c in calls] == ["run", "status"]


def test_a_failed_run_still_prints_the_audit_and_fails(tmp_path):
    proc, calls = forget(tmp_path, run_status=1, SITE="local-demo", ANONYMOUS_ID="a-1")
    assert proc.returncode == 1
    assert [c.split(" | ")[0] for c in calls][-1] == "status"


@pytest.mark.parametrize("request_vars,message", [
    ({"SITE": "s", "ANONYMOUS_ID": "a", "USER_ID": "u"}, "not both"),
    ({"ANONYMOUS_ID": "a"}, "SITE=<site id> is needed"),
    ({"USER_ID": "u"}, "SITE=<site id> is needed"),
    ({"SITE": "s"}, "without ANONYMOUS_ID"),
])
def test_an_incomplete_request_is_refused_before_anything_runs(tmp_path, request_vars, message):
    proc, calls = forget(tmp_path, **request_vars)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert calls == []


def test_make_forget_passes_the_request_and_is_in_help():
    makefile = (ROOT / "Makefile").read_text()
    assert 'SITE="$(SITE)" ANONYMOUS_ID="$(ANONYMOUS_ID)" USER_ID="$(USER_ID)" bash scripts/forget.sh' in makefile
    help_text = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    assert any(line.split()[0] == "forget" for line in help_text.splitlines() if line.strip())
