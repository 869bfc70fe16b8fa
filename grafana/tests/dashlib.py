"""Helpers shared by the dashboard tests and query_all_panels.py (standard library only)."""

from __future__ import annotations

import json
import re
from pathlib import Path

GRAFANA_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = GRAFANA_DIR.parent
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"
DATASOURCES_YML = GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yml"

PROMETHEUS_UID = "prometheus"

# Grafana's built-in variables (https://grafana.com/docs/grafana/latest/dashboards/variables/
# add-template-variables/#global-variables) and what query_all_panels.py substitutes for them.
BUILTIN_VARIABLES = {
    "__rate_interval": None,  # window chosen by the caller
    "__interval": None,
    "__range": None,
    "__interval_ms": "60000",
    "__range_s": "300",
    "__range_ms": "300000",
    "__dashboard": "dashboard",
    "__from": "0",
    "__to": "0",
}

# The macros Grafana's PostgreSQL datasource expands on the server (pkg/tsdb/
# grafana-postgresql-datasource/macros.go); sqlmacros.py expands them the same way.
SQL_MACROS = {
    "__time", "__timeEpoch", "__timeFilter", "__timeFrom", "__timeTo", "__timeGroup", "__timeGroupAlias",
    "__unixEpochFilter", "__unixEpochNanoFilter", "__unixEpochNanoFrom", "__unixEpochNanoTo",
    "__unixEpochGroup", "__unixEpochGroupAlias",
}

# $name, ${name}, ${name:format}, [[name]]
VARIABLE_RE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")


def dashboard_paths() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def load_dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in dashboard_paths()}


def iter_panels(dashboard: dict):
    """Every panel, including panels nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def datasource_uid(ds) -> str | None:
    if isinstance(ds, dict):
        return ds.get("uid")
    if isinstance(ds, str):  # legacy: datasource by name/uid string
        return ds
    return None


def target_uid(target: dict, panel: dict) -> str | None:
    return datasource_uid(target.get("datasource")) or datasource_uid(panel.get("datasource"))


def query_text(target: dict) -> str:
    """The query a target runs: PromQL/LogQL expr, CloudWatch metric or Logs Insights query, SQL."""
    for key in ("expr", "expression", "metricName", "query", "rawSql"):
        value = target.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def prometheus_queries(dashboard: dict):
    """(panel title, refId, expr) of every Prometheus target of a dashboard."""
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            if target_uid(target, panel) == PROMETHEUS_UID:
                yield panel.get("title", ""), target.get("refId", ""), target.get("expr", "")


def prometheus_variable_queries(dashboard: dict):
    """(variable name, query) of every Prometheus query variable."""
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query" and datasource_uid(var.get("datasource")) == PROMETHEUS_UID:
            q = var.get("query")
            if isinstance(q, dict):
                q = q.get("query", "")
            yield var["name"], q or var.get("definition", "")


def variables_used(text: str) -> set[str]:
    return {a or b or c for a, b, c in VARIABLE_RE.findall(text)}


def substitute_variables(expr: str, window: str = "1m") -> str:
    """Make a Grafana PromQL expression runnable against Prometheus directly:
    $__rate_interval / $__interval / $__range -> window, every dashboard variable -> .*"""

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name in BUILTIN_VARIABLES:
            return BUILTIN_VARIABLES[name] or window
        return ".*"

    return VARIABLE_RE.sub(repl, expr)


LABEL_VALUES_RE = re.compile(r"^\s*label_values\(\s*(.*?)\s*(?:,\s*(\w+)\s*)?\)\s*$", re.S)


def variable_query_to_promql(query: str) -> str:
    """label_values(<selector>, label) -> <selector> (what must return data for the variable)."""
    m = LABEL_VALUES_RE.match(query)
    if m and m.group(2):
        return m.group(1)
    if m:  # label_values(label): any series
        return 'count by (%s) ({__name__=~".+"})' % m.group(1)
    for fn in ("query_result", "metrics"):
        if query.strip().startswith(fn + "("):
            return query.strip()[len(fn) + 1:-1]
    return query


_STRING_RE = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING_RE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBER_RE = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_IDENT_RE = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "atan2", "offset", "inf", "nan", "start", "end",
}


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (heuristic, good for dashboard queries):
    identifiers that are not functions, keywords, label names or inside strings/brackets."""
    s = VARIABLE_RE.sub(" ", expr)
    s = _STRING_RE.sub('""', s)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers (strings already blanked)
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range / subquery durations
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    s = re.sub(r"@\s*\S+", " ", s)
    s = _GROUPING_RE.sub(" ", s)
    s = _NUMBER_RE.sub(" ", s)
    names = set()
    for m in _IDENT_RE.finditer(s):
        rest = s[m.end():].lstrip()
        if rest.startswith("("):  # function or aggregation call
            continue
        if m.group(0).lower() in _KEYWORDS:
            continue
        names.add(m.group(0))
    # {__name__="..."} selectors
    names.update(re.findall(r'__name__\s*=\s*"([A-Za-z_:][A-Za-z0-9_:]*)"', expr))
    return names
