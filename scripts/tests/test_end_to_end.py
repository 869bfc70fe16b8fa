"""End to end: a short k6 load through the whole local pipeline, reconciled by the verifier,
then every PromQL expression of the Prometheus dashboards queried against the live scrape.

Needs the local stack (scripts/test.sh starts it and sources scripts/env.sh) and the debug
binaries (built by scripts/test.sh before the tests).
"""

import os
import sys
import time

from pylib import CARGO_TARGET as TARGET, run


def test_k6_load_through_the_local_pipeline_is_exact_and_every_panel_has_data(tmp_path):
    """Invariant: every event the API acknowledged under load is in every store exactly once,
    and every dashboard query returns data from the pipeline's own metrics."""
    for script in ("scripts/pipeline.sh", "scripts/prometheus.sh"):
        up = run(["bash", script, "up"])
        assert up.returncode == 0, up.stdout + up.stderr
    acks = tmp_path / "acks.ndjson"
    env = {
        **os.environ,
        "RATE": "40",
        "DURATION": "20s",
        "PRE_VUS": "100",
        "SUMMARY_DIR": str(tmp_path),
        "ACK_LOG_FILE": str(acks),
    }
    k6 = run(["bash", "scripts/k6.sh", "run", "--quiet", "loadtest/k6/sustained.js"], env=env, timeout=180)
    assert k6.returncode == 0, k6.stdout[-3000:] + k6.stderr[-3000:]
    assert acks.stat().st_size > 0, "the load run acknowledged nothing"

    verify = run([str(TARGET / "debug" / "verify"), "--wait", "120", str(acks)], timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "verify: OK" in verify.stdout

    # Two scrapes (5 s interval) after the load so rates over the window have data.
    time.sleep(12)
    panels = run([sys.executable, "grafana/tests/query_all_panels.py", "--window", "2m"], timeout=120)
    assert panels.returncode == 0, panels.stdout + panels.stderr
