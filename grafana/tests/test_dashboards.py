"""Static checks of the provisioned Grafana dashboards (grafana/dashboards/*.json)."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys

import pytest

from dashlib import (
    BUILTIN_VARIABLES,
    DASHBOARD_DIR,
    DATASOURCES_YML,
    GRAFANA_DIR,
    PROMETHEUS_UID,
    REPO_ROOT,
    SQL_MACROS,
    dashboard_paths,
    datasource_uid,
    iter_panels,
    metric_names,
    prometheus_queries,
    prometheus_variable_queries,
    query_text,
    target_uid,
    variable_query_to_promql,
    variables_used,
)
from emitted_metrics import emf_namespace, prometheus_names

# The pipeline's Prometheus series, read from the code's metric registrations (not a hand-kept
# list); test_contract_set_mirrors_contract_doc holds README.md's "Metrics" section to the same set.
# Prometheus dashboards may only query these names.
CONTRACT_METRICS = prometheus_names()

REQUIRED_DASHBOARDS = {
    "pipeline-aws-cloudwatch.json",
    "stream-lag-cloudwatch.json",
    "stream-lag-prometheus.json",
    "pipeline-cloudwatch.json",
    "pipeline-prometheus.json",
    "site-analytics.json",
    "logs-cloudwatch.json",
}
PROMETHEUS_DASHBOARDS = {"stream-lag-prometheus.json", "pipeline-prometheus.json"}
EXPECTED_DATASOURCES = {
    "cloudwatch": "cloudwatch",
    "prometheus": "prometheus",
    "loki": "loki",
    "analytics-postgres": "grafana-postgresql-datasource",
}

# Panels of type row only lay out other panels; every other panel must query something.
LAYOUT_ONLY_TYPES = {"row"}

PATHS = dashboard_paths()
IDS = [p.name for p in PATHS]


def load(path):
    return json.loads(path.read_text())


def provisioned_datasources() -> dict[str, str]:
    """uid -> type from grafana/provisioning/datasources/*.yml."""
    found = {}
    files = sorted(DATASOURCES_YML.parent.glob("*.y*ml"))
    assert files, "no datasource provisioning files"
    try:
        import yaml
    except ImportError:  # fall back to a line parser: "- name:" starts a datasource
        yaml = None
    for f in files:
        if yaml is not None:
            for ds in yaml.safe_load(f.read_text()).get("datasources", []):
                found[ds["uid"]] = ds["type"]
        else:
            uid = typ = None
            for line in f.read_text().splitlines() + ["  - name: end"]:
                if re.match(r"\s*-\s+name:", line):
                    if uid:
                        found[uid] = typ
                    uid = typ = None
                elif m := re.match(r"\s+uid:\s*(\S+)", line):
                    uid = m.group(1)
                elif m := re.match(r"\s+type:\s*(\S+)", line):
                    typ = m.group(1)
    return found


def all_targets(dashboard):
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def test_required_dashboards_exist():
    assert REQUIRED_DASHBOARDS <= set(IDS), f"missing: {REQUIRED_DASHBOARDS - set(IDS)}"


def test_provisioned_datasource_uids_are_fixed():
    assert provisioned_datasources() == EXPECTED_DATASOURCES


def test_dashboard_uids_are_unique():
    uids = [load(p)["uid"] for p in PATHS]
    assert len(uids) == len(set(uids)), uids


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_dashboard_parses_and_has_basics(path):
    d = load(path)
    assert isinstance(d, dict)
    assert d.get("uid") and len(d["uid"]) <= 40
    assert d.get("title")
    assert d.get("panels"), "dashboard has no panels"
    assert d.get("id") is None, "provisioned dashboards must not carry a database id"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_panel_ids_unique(path):
    ids = [p.get("id") for p in iter_panels(load(path))]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_panels_fit_grid_without_overlap(path):
    cells = {}
    for p in iter_panels(load(path)):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, (p["title"], g)
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_every_panel_has_a_query(path):
    for panel in iter_panels(load(path)):
        if panel.get("type") in LAYOUT_ONLY_TYPES:
            continue
        targets = panel.get("targets", [])
        assert targets, f"panel {panel.get('title')!r} has no targets"
        for t in targets:
            assert query_text(t).strip(), f"panel {panel['title']!r} target {t.get('refId')} is empty"
        ref_ids = [t.get("refId") for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), f"duplicate refIds in {panel['title']!r}"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_datasource_uids_exist_in_provisioning(path):
    provisioned = provisioned_datasources()
    d = load(path)
    used = []
    for panel in iter_panels(d):
        if "datasource" in panel:
            used.append((panel.get("title"), panel["datasource"]))
        for t in panel.get("targets", []):
            assert target_uid(t, panel), f"target without datasource in {panel.get('title')!r}"
            if "datasource" in t:
                used.append((panel.get("title"), t["datasource"]))
    for var in d.get("templating", {}).get("list", []):
        if "datasource" in var:
            used.append(("variable " + var["name"], var["datasource"]))
    assert used
    for where, ds in used:
        uid = datasource_uid(ds)
        assert uid in provisioned, f"{where}: datasource uid {uid!r} is not provisioned"
        if isinstance(ds, dict) and ds.get("type"):
            assert ds["type"] == provisioned[uid], f"{where}: type {ds['type']} != {provisioned[uid]}"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_template_variables_are_defined(path):
    d = load(path)
    defined = {v["name"] for v in d.get("templating", {}).get("list", [])}
    for panel, t in all_targets(d):
        texts = [query_text(t)] + [str(x) for x in t.get("logGroupNames", [])]
        texts += [str(v) for v in t.get("dimensions", {}).values()] + [str(t.get("region", ""))]
        for text in texts:
            unknown = variables_used(text) - defined - set(BUILTIN_VARIABLES) - SQL_MACROS
            assert not unknown, f"{panel['title']!r} uses undefined variables {unknown}"


@pytest.mark.parametrize("name", sorted(PROMETHEUS_DASHBOARDS))
def test_prometheus_dashboards_use_only_contract_metrics(name):
    d = load(DASHBOARD_DIR / name)
    queries = list(prometheus_queries(d))
    assert queries, "no Prometheus queries"
    for panel in iter_panels(d):
        for t in panel.get("targets", []):
            assert target_uid(t, panel) == PROMETHEUS_UID, f"{panel['title']!r}: not Prometheus"
    for title, ref, expr in queries:
        names = metric_names(expr)
        assert names, f"{title!r} {ref}: no metric name found in {expr!r}"
        unknown = names - CONTRACT_METRICS
        assert not unknown, f"{title!r} {ref}: metrics not in the contract: {sorted(unknown)}"
    for var, query in prometheus_variable_queries(d):
        unknown = metric_names(variable_query_to_promql(query)) - CONTRACT_METRICS
        assert not unknown, f"variable {var}: metrics not in the contract: {sorted(unknown)}"


def _prom_metrics_used(name):
    return set().union(*(metric_names(e) for _, _, e in prometheus_queries(load(DASHBOARD_DIR / name))))


def test_stream_lag_prometheus_content():
    used = _prom_metrics_used("stream-lag-prometheus.json")
    assert {
        "consumer_millis_behind_latest",
        "consumer_records_total",
        "consumer_bytes_total",
        "consumer_end_to_end_latency_seconds_bucket",
        "producer_put_records_calls_total",
        "producer_put_records_retried_records_total",
    } <= used
    exprs = [e for _, _, e in prometheus_queries(load(DASHBOARD_DIR / "stream-lag-prometheus.json"))]
    assert any(e.startswith("max(consumer_millis_behind_latest") for e in exprs), "no max lag"
    assert any("by (shard)" in e for e in exprs), "no per-shard lag"
    assert any("histogram_quantile(0.99" in e and "end_to_end" in e for e in exprs)


def test_pipeline_prometheus_content():
    used = _prom_metrics_used("pipeline-prometheus.json")
    assert {
        "producer_requests_total",
        "producer_request_duration_seconds_bucket",
        "producer_events_total",
        "consumer_batches_total",
        "consumer_sink_duration_seconds_bucket",
        "consumer_stage_duration_seconds_sum",
        "consumer_sink_requests_total",
        "consumer_quarantined_total",
        "consumer_duplicates_total",
        "consumer_dynamodb_unprocessed_retries_total",
    } <= used
    exprs = [e for _, _, e in prometheus_queries(load(DASHBOARD_DIR / "pipeline-prometheus.json"))]
    assert any("by (status)" in e for e in exprs)
    assert any("histogram_quantile(0.5," in e and "producer_request_duration" in e for e in exprs)
    assert any("histogram_quantile(0.99," in e and "producer_request_duration" in e for e in exprs)
    assert any("histogram_quantile(0.99," in e and "by (sink, le)" in e for e in exprs)
    assert any("by (reason)" in e for e in exprs)


def cloudwatch_metrics(name):
    """{(namespace, metricName, frozenset(dimensions))} of a CloudWatch dashboard's builder-mode
    targets."""
    out = set()
    for panel, t in all_targets(load(DASHBOARD_DIR / name)):
        if t.get("queryMode", "Metrics") == "Metrics" and t.get("metricEditorMode") != 1:
            out.add((t["namespace"], t["metricName"], frozenset(t.get("dimensions", {}).items())))
    return out


CLOUDWATCH_DASHBOARDS = sorted(p.name for p in DASHBOARD_DIR.glob("*-cloudwatch.json"))


@pytest.mark.parametrize("name", CLOUDWATCH_DASHBOARDS)
def test_cloudwatch_targets_well_formed(name):
    d = load(DASHBOARD_DIR / name)
    for panel, t in all_targets(d):
        assert target_uid(t, panel) == "cloudwatch"
        assert t.get("region") == "$region", panel["title"]
        if t.get("queryMode", "Metrics") == "Metrics" and t.get("metricEditorMode") == 1:
            # Code mode: a SEARCH over the application's metrics (grafana/tests/test_metric_names.py).
            assert t.get("expression", "").startswith("SEARCH("), panel["title"]
        elif t.get("queryMode", "Metrics") == "Metrics":
            for key in ("namespace", "metricName", "statistic"):
                assert t.get(key), f"{panel['title']!r}: {key} missing"
            assert t["namespace"].startswith("AWS/") or t["namespace"] == emf_namespace()
        else:
            assert t["queryMode"] == "Logs"
            assert t.get("expression") and t.get("logGroupNames")
    names = {v["name"] for v in d["templating"]["list"]}
    assert "region" in names


def test_stream_lag_cloudwatch_content():
    m = cloudwatch_metrics("stream-lag-cloudwatch.json")
    kin = frozenset({("StreamName", "$stream_name")})
    for metric in (
        "GetRecords.IteratorAgeMilliseconds",
        "IncomingRecords",
        "IncomingBytes",
        "ReadProvisionedThroughputExceeded",
        "WriteProvisionedThroughputExceeded",
    ):
        assert ("AWS/Kinesis", metric, kin) in m, metric
    assert ("AWS/Lambda", "IteratorAge", frozenset({("FunctionName", "$consumer_function")})) in m
    names = {v["name"] for v in load(DASHBOARD_DIR / "stream-lag-cloudwatch.json")["templating"]["list"]}
    assert {"region", "stream_name", "consumer_function"} <= names


def test_pipeline_cloudwatch_content():
    m = cloudwatch_metrics("pipeline-cloudwatch.json")
    api = frozenset({("ApiName", "$api_name")})
    for metric in ("Count", "Latency", "4XXError", "5XXError"):
        assert ("AWS/ApiGateway", metric, api) in m, metric
    for fn in ("$producer_function", "$consumer_function"):
        dims = frozenset({("FunctionName", fn)})
        for metric in ("Invocations", "Errors", "Throttles", "Duration", "ConcurrentExecutions"):
            assert ("AWS/Lambda", metric, dims) in m, (fn, metric)
    names = {v["name"] for v in load(DASHBOARD_DIR / "pipeline-cloudwatch.json")["templating"]["list"]}
    assert {"region", "api_name", "producer_function", "consumer_function"} <= names


def test_logs_cloudwatch_reads_every_function_log_group():
    """On AWS, where no Loki runs, this is the log viewer: each panel queries the log groups of
    the four functions, and each group's function is a variable of the dashboard."""
    d = load(DASHBOARD_DIR / "logs-cloudwatch.json")
    variables = {v["name"]: v for v in d["templating"]["list"]}
    groups = {"/aws/lambda/$producer_function", "/aws/lambda/$consumer_function", "/aws/lambda/$compactor_function",
              "/aws/lambda/$forget_function"}
    targets = list(all_targets(d))
    assert len(targets) == 2, [p["title"] for p, _ in targets]
    for panel, t in targets:
        assert panel["type"] == "logs" and t["queryMode"] == "Logs", panel["title"]
        assert set(t["logGroupNames"]) == groups, panel["title"]
    for group in groups:
        assert group.removeprefix("/aws/lambda/$") in variables, group
    assert variables["search"]["type"] == "textbox"
    assert any('"$search"' in t["expression"] for _, t in targets), "no panel uses the search box"


@functools.cache
def generator():
    """grafana/tools/build_dashboards.py as a module (registered first: its dataclasses look
    their module up while they are defined)."""
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA_DIR / "tools" / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_dashboards_match_generator():
    """grafana/tools/build_dashboards.py is the source; the committed JSON must be regenerated."""
    module = generator()
    rendered = module.render_all()
    assert set(rendered) == set(IDS), "dashboard files and generator disagree on the file set"
    stale = [n for n, text in rendered.items() if (DASHBOARD_DIR / n).read_text() != text]
    stale += [str(p.relative_to(REPO_ROOT)) for p, text in module.render_terraform().items()
              if not p.exists() or p.read_text() != text]
    assert not stale, f"out of date, run python3 grafana/tools/build_dashboards.py: {stale}"


CLOUDWATCH_TEMPLATE = REPO_ROOT / "terraform" / "templates" / "cloudwatch-dashboard.json.tftpl"
DASHBOARDS_TF = REPO_ROOT / "terraform" / "dashboards.tf"


def render_template(text: str, values: dict[str, str]) -> str:
    """What templatefile() makes of a template with only ${name} interpolations and $${ / %%{
    escapes (anything else in it is an error here, as it would be a surprise there)."""
    out = re.sub(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: values[m.group(1)], text)
    assert not re.search(r"(?<![$%])[$%]\{", out), "template directive or expression other than ${name}"
    return out.replace("$${", "${").replace("%%{", "%{")


def test_cloudwatch_dashboard_template_renders_with_what_dashboards_tf_passes():
    """dashboards.tf passes exactly the template's variables, and the rendered body is a
    dashboard of the one-pane panels, each widget in this stack's region."""
    text = CLOUDWATCH_TEMPLATE.read_text()
    wanted = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    path = r"\$\{path\.module\}/templates/" + re.escape(CLOUDWATCH_TEMPLATE.name)
    call = re.search(r"templatefile\(\s*\"" + path + r"\",\s*\{(.*?)\}\)", DASHBOARDS_TF.read_text(), re.S)
    assert call, "dashboards.tf does not render templates/cloudwatch-dashboard.json.tftpl"
    passed = set(re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", call.group(1), re.M))
    assert wanted == passed, f"template wants {sorted(wanted)}, dashboards.tf passes {sorted(passed)}"
    body = json.loads(render_template(text, {k: f"value-of-{k}" for k in wanted}))
    widgets = [w for w in body["widgets"] if w["type"] == "metric"]
    module = generator()
    assert [w["properties"]["title"] for w in widgets] == [p.title for p in module.AWS_PANES]
    assert {w["properties"]["region"] for w in widgets} == {"value-of-region"}
    cells = set()
    for w in body["widgets"]:
        assert 0 <= w["x"] and w["x"] + w["width"] <= 24, w
        area = {(x, y) for x in range(w["x"], w["x"] + w["width"]) for y in range(w["y"], w["y"] + w["height"])}
        assert not area & cells, f"widget overlaps another: {w.get('properties', {}).get('title')}"
        cells |= area


def test_pipeline_aws_cloudwatch_covers_the_pipeline():
    """Issue #22's list: consumer lag (IteratorAge and end-to-end latency), failed batches,
    quarantine by reason, duplicates, sink latency per sink, producer outcomes, on-failure queue
    depth, RDS CPU / connections / free storage."""
    m = cloudwatch_metrics("pipeline-aws-cloudwatch.json")
    names = {(ns, metric) for ns, metric, _ in m}
    emf = emf_namespace()
    assert {
        ("AWS/Lambda", "IteratorAge"),
        (emf, "consumer_end_to_end_latency_seconds"),
        (emf, "consumer_batches_total"),
        (emf, "consumer_duplicates_total"),
        (emf, "consumer_sink_duration_seconds"),
        (emf, "producer_events_total"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/RDS", "CPUUtilization"),
        ("AWS/RDS", "DatabaseConnections"),
        ("AWS/RDS", "FreeStorageSpace"),
    } <= names
    sinks = {dict(d).get("sink") for ns, metric, d in m if metric == "consumer_sink_duration_seconds"}
    assert sinks == {"s3", "dynamodb", "postgres"}
    outcomes = {dict(d).get("outcome") for ns, metric, d in m if metric == "producer_events_total"}
    assert {"accepted", "rejected"} <= outcomes
    searches = [t["expression"] for _, t in all_targets(load(DASHBOARD_DIR / "pipeline-aws-cloudwatch.json"))
                if t.get("metricEditorMode") == 1]
    assert any("consumer_quarantined_total" in e and ",reason}" in e for e in searches), searches
    names = {v["name"] for v in load(DASHBOARD_DIR / "pipeline-aws-cloudwatch.json")["templating"]["list"]}
    assert {"region", "consumer_function", "failure_queue", "db_instance"} <= names


CONTRACT_DOCS = [REPO_ROOT / "README.md"]
CONTRACT_LINE_RE = re.compile(r"^([a-z_:][a-z0-9_:]*)(?:\{[^}]*\})?\s+.*\b(counter|gauge|histogram)\b")


def test_contract_set_mirrors_contract_doc():
    """README.md's "Metrics" section documents exactly the series the code exposes."""
    for doc in CONTRACT_DOCS:
        if not doc.exists():
            continue
        text = doc.read_text()
        m = re.search(r"^##+ Metrics.*?$(.*?)(?=^##? |\Z)", text, re.M | re.S)
        if not m:
            continue
        documented = {}
        for line in m.group(1).splitlines():
            if lm := CONTRACT_LINE_RE.match(line.strip()):
                documented[lm.group(1)] = lm.group(2)
        if not documented:
            continue
        expected = set(documented)
        for name, kind in documented.items():
            if kind == "histogram":
                expected |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        assert CONTRACT_METRICS == expected, (
            f"{doc.relative_to(REPO_ROOT)} lists {sorted(expected - CONTRACT_METRICS)}, which the code does not "
            f"register; the code registers {sorted(CONTRACT_METRICS - expected)}, which it does not list"
        )
        return
    pytest.fail("README.md has no Metrics section listing the metrics")


@pytest.mark.parametrize(
    "expr, expected",
    [
        ('max(consumer_millis_behind_latest{shard=~"$shard"})', {"consumer_millis_behind_latest"}),
        ("histogram_quantile(0.99, sum by (sink, le) (rate(consumer_sink_duration_seconds_bucket[$__rate_interval])))",
         {"consumer_sink_duration_seconds_bucket"}),
        ('sum(rate(a_total{status=~"5.."}[5m])) / sum(rate(b_total[5m])) > 0.01', {"a_total", "b_total"}),
        ("sum(x) by (le) * on (job) group_left (instance) y offset 5m", {"x", "y"}),
        ("1e-9 + 2 * rate(z[1m])", {"z"}),
    ],
)
def test_metric_name_extraction(expr, expected):
    assert metric_names(expr) == expected


def test_pipeline_aws_variables_offer_the_names_terraform_gives():
    """Each resource variable of the one-pane dashboard lists only names ending in the suffix
    terraform/ gives that resource after var.name: followed from dashboards.tf's templatefile()
    argument through the resource's name attribute to the local that builds it."""
    sys.path.insert(0, str(REPO_ROOT / "terraform" / "tests"))
    import tfconfig

    if tfconfig.hcl2 is None:
        pytest.skip("hcl2 parser not installed (scripts/requirements/terraform.txt)")
    tf = tfconfig.Config(REPO_ROOT / "terraform")
    call = re.search(r"templatefile\((.*?)\}\)", DASHBOARDS_TF.read_text(), re.S).group(1)
    args = dict(re.findall(r"^\s*(\w+)\s*=\s*(\S+)\s*$", call, re.M))
    variables = {v["name"]: v for v in load(DASHBOARD_DIR / "pipeline-aws-cloudwatch.json")["templating"]["list"]}
    checked = 0
    for name, var in variables.items():
        if name == "region":
            continue
        ref = re.fullmatch(r"(aws_\w+)\.(\w+)\.(\w+)", args[name])
        assert ref, f"dashboards.tf passes {name} = {args[name]}, not a resource attribute"
        value = tfconfig.attr(tf.resource(ref.group(1), ref.group(2)), ref.group(3))
        if local := re.fullmatch(r"\$\{local\.(\w+)\}", str(value)):
            value = tf.locals[local.group(1)]
        suffix = re.fullmatch(r"/(.+)\$/", var["regex"]).group(1)
        assert re.fullmatch(r"\$\{var\.name\}" + re.escape(suffix), str(value)), (name, value, suffix)
        checked += 1
    assert checked, "the dashboard has no resource variables"
