"""promtool checks of the Prometheus configs, alert rules and dashboard PromQL.

Needs promtool (Debian package `prometheus`, installed by scripts/prometheus.sh up); the tests
that run it are skipped with a message when it cannot be found.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from dashlib import GRAFANA_DIR, REPO_ROOT, load_dashboards, prometheus_queries, substitute_variables

PROM_DIR = GRAFANA_DIR / "prometheus"
LOCAL_CONFIG = PROM_DIR / "prometheus.local.yml"
HOST_CONFIG = PROM_DIR / "prometheus.yml"
RULES = PROM_DIR / "rules" / "alerts.yml"
RULES_TEST = PROM_DIR / "rules" / "alerts.test.yml"


def find_promtool() -> str | None:
    return os.environ.get("PROMTOOL") or shutil.which("promtool") or next(
        (p for p in ("/usr/bin/promtool", "/usr/local/bin/promtool") if os.access(p, os.X_OK)), None
    )


PROMTOOL = find_promtool()
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found (install it with `scripts/prometheus.sh up` or "
    "`apt-get install --no-install-recommends prometheus`, or set PROMTOOL)",
)


def promtool(*args: str) -> str:
    proc = subprocess.run(
        [PROMTOOL, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


@needs_promtool
def test_check_local_config():
    out = promtool("check", "config", str(LOCAL_CONFIG.relative_to(REPO_ROOT)))
    # rule_files: rules/*.yml must resolve (relative to the config file) to alerts.yml.
    assert "SUCCESS: 1 rule files found" in out, out
    assert "Checking " + str(RULES.relative_to(REPO_ROOT)) in out or "alerts.yml" in out, out


@needs_promtool
def test_check_host_config():
    out = promtool("check", "config", str(HOST_CONFIG.relative_to(REPO_ROOT)))
    assert "SUCCESS: 1 rule files found" in out, out


@needs_promtool
def test_check_rules():
    out = promtool("check", "rules", str(RULES.relative_to(REPO_ROOT)))
    assert "SUCCESS" in out


@needs_promtool
def test_rules_unit_tests():
    out = promtool("test", "rules", str(RULES_TEST.relative_to(REPO_ROOT)))
    assert "SUCCESS" in out


@needs_promtool
def test_dashboard_promql_parses(tmp_path):
    """Every Prometheus panel query (with Grafana variables substituted) is valid PromQL:
    promtool parses them as recording rules."""
    rules = []
    for name, dashboard in sorted(load_dashboards().items()):
        for title, ref, expr in prometheus_queries(dashboard):
            rules.append({
                "record": f"dashboard:query_{len(rules)}",
                "expr": substitute_variables(expr, "1m"),
                "labels": {"dashboard": name, "panel": title, "ref": ref},
            })
    assert rules, "no Prometheus queries in the dashboards"
    path = tmp_path / "dashboard-queries.yml"
    # JSON is valid YAML; no PyYAML needed.
    path.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}, indent=1))
    out = promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in out, out


def _yaml():
    return pytest.importorskip("yaml", reason="PyYAML not installed (scripts/requirements/observability.txt)")


def test_local_config_scrapes_pipeline_every_5s():
    cfg = _yaml().safe_load(LOCAL_CONFIG.read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    expected = {"producer": "127.0.0.1:9101", "consumer": "127.0.0.1:9102"}
    for job, target in expected.items():
        assert job in jobs, f"job {job} missing"
        targets = [t for sc in jobs[job]["static_configs"] for t in sc["targets"]]
        assert targets == [target]
        assert jobs[job].get("scrape_interval", cfg["global"]["scrape_interval"]) == "5s"
        assert jobs[job].get("metrics_path", "/metrics") == "/metrics"
    # Only loopback targets locally.
    for j in cfg["scrape_configs"]:
        for sc in j["static_configs"]:
            for t in sc["targets"]:
                assert t.startswith("127.0.0.1:"), t


@pytest.mark.parametrize("config", [LOCAL_CONFIG, HOST_CONFIG], ids=lambda p: p.name)
def test_rule_files_lists_every_rule_file_but_no_test_file(config):
    """A rules/*.yml glob would also load alerts.test.yml and Prometheus would refuse the config,
    so rule files are listed one by one; none may be forgotten."""
    listed = _yaml().safe_load(config.read_text())["rule_files"]
    rule_files = sorted(
        f"rules/{p.name}" for p in (PROM_DIR / "rules").glob("*.yml") if not p.name.endswith(".test.yml")
    )
    assert sorted(listed) == rule_files


def test_alert_rules_cover_the_required_alerts():
    doc = _yaml().safe_load(RULES.read_text())
    alerts = {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}
    for name in ("ConsumerLagHigh", "QuarantineRateHigh", "ProducerErrorRate", "ConsumerBatchFailures"):
        assert name in alerts, name
        assert alerts[name]["annotations"].get("summary"), name
    lag = alerts["ConsumerLagHigh"]
    assert lag["expr"].strip() == "max(consumer_millis_behind_latest) > 60000"
    assert lag["for"] == "5m"
    tests = _yaml().safe_load(RULES_TEST.read_text())
    tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])}
    assert set(alerts) <= tested, f"alerts without unit tests: {set(alerts) - tested}"
    lag_cases = [a for t in tests["tests"] for a in t["alert_rule_test"] if a["alertname"] == "ConsumerLagHigh"]
    assert any(a["exp_alerts"] for a in lag_cases), "no ConsumerLagHigh firing case"
    assert any(not a["exp_alerts"] for a in lag_cases), "no ConsumerLagHigh not-firing case"
