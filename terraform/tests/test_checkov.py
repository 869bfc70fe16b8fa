"""Run checkov over terraform/ and require zero failed checks.

Suppressions are inline `#checkov:skip=<id>:<reason>` comments next to the resource (see
test_structure.py::test_every_checkov_skip_is_inline_with_a_reason); terraform/.checkov.yaml
only sets output options and skip-download (no network).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tfconfig import REPO_ROOT, TF_DIR


def find_checkov() -> str | None:
    beside_python = Path(sys.executable).parent / "checkov"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("checkov")


def test_checkov_finds_no_failed_checks():
    checkov = find_checkov()
    if checkov is None:
        pytest.skip("checkov is not installed: pip install --require-hashes -r scripts/requirements/terraform.txt")

    env = dict(os.environ)
    env.pop("BC_API_KEY", None)  # never talk to the Prisma Cloud platform from tests
    proc = subprocess.run(
        [checkov, "-d", str(TF_DIR), "--config-file", str(TF_DIR / ".checkov.yaml"), "--output", "json"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.stdout.strip(), f"checkov printed nothing (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    reports = json.loads(proc.stdout)
    if isinstance(reports, dict):
        reports = [reports]

    by_type = {r["check_type"]: r for r in reports}
    assert "terraform" in by_type, f"checkov scanned no Terraform: {sorted(by_type)}"
    assert by_type["terraform"]["summary"]["resource_count"] > 50, "checkov saw suspiciously few resources"

    failures = []
    for report in reports:
        summary = report["summary"]
        assert summary["parsing_errors"] == 0, f"{report['check_type']}: parsing errors"
        for check in report["results"].get("failed_checks", []):
            failures.append(f"{check['check_id']} {check['resource']} ({check['file_path']}:{check['file_line_range']}) {check['check_name']}")
    assert not failures, "checkov failed checks:\n" + "\n".join(failures)
    assert proc.returncode == 0, proc.stderr[-4000:]
