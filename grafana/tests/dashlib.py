"""Helpers shared by the dashboard tests, query_all_panels.py and terraform/tests/test_alarms.py
(which reads the alarms into the same MetricUse, SEARCH() parsing included). Standard library only."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
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


# --------------------------------------------------------------------------------------------
# CloudWatch metrics a dashboard uses (Grafana JSON or a CloudWatch dashboard body)
# --------------------------------------------------------------------------------------------

CLOUDWATCH_UID = "cloudwatch"


@dataclass(frozen=True)
class MetricUse:
    """One CloudWatch metric a panel, widget or alarm reads. `dims` maps each dimension to its
    value, None where the value is a variable filled in at deploy or view time. For a SEARCH,
    `dims` holds the schema's dimension set (CloudWatch's match is exact) with the values it
    filters on. `exact` is False where only some of the dimensions are named (a variable listing
    one dimension's values)."""

    where: str
    namespace: str
    name: str
    dims: tuple[tuple[str, str | None], ...]
    exact: bool = True

    @property
    def dimensions(self) -> dict[str, str | None]:
        return dict(self.dims)


SEARCH_RE = re.compile(r"SEARCH\(\s*'((?:[^'\\]|\\.)*)'")
SCHEMA_RE = re.compile(r"\{([^}]*)\}")
TERM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s"()]+))')


def _fixed(value) -> str | None:
    """A dimension value as a literal, or None when it is a variable ($x, ${x})."""
    return None if not isinstance(value, str) or "$" in value else value


def search_uses(expression: str, where: str) -> list[MetricUse]:
    """The metrics the SEARCH() calls of a math expression read. A search without a
    {namespace,dimensions} schema has no exact dimension set: its namespace is recorded as "", so
    the metric-name test refuses it."""
    uses = []
    for m in SEARCH_RE.finditer(expression):
        text = m.group(1).replace('\\"', '"')
        schema = SCHEMA_RE.search(text)
        parts = [p.strip().strip('"') for p in schema.group(1).split(",")] if schema else [""]
        terms = {k: (q if q is not None and q != "" else u) for k, q, u in TERM_RE.findall(text)}
        name = terms.pop("MetricName", "")
        dims = {key: _fixed(terms.get(key)) for key in parts[1:]}
        uses.append(MetricUse(where, parts[0], name, tuple(sorted(dims.items(), key=lambda kv: kv[0]))))
    return uses


def grafana_cloudwatch_uses(dashboard: dict, file: str) -> list[MetricUse]:
    """Every CloudWatch metric a Grafana dashboard's panels and variables read."""
    uses = []
    for panel in iter_panels(dashboard):
        for t in panel.get("targets", []):
            if target_uid(t, panel) != CLOUDWATCH_UID or t.get("queryMode", "Metrics") != "Metrics":
                continue
            where = f"{file}: {panel.get('title')!r} {t.get('refId')}"
            if t.get("metricEditorMode") == 1 or t.get("metricQueryType") == 1 or t.get("expression"):
                uses += search_uses(t.get("expression", ""), where)
                continue
            dims = {}
            for key, value in (t.get("dimensions") or {}).items():
                values = value if isinstance(value, list) else [value]
                dims[key] = _fixed(values[0]) if len(values) == 1 else None
            uses.append(MetricUse(where, t.get("namespace", ""), t.get("metricName", ""),
                                  tuple(sorted(dims.items(), key=lambda kv: kv[0]))))
    for var in dashboard.get("templating", {}).get("list", []):
        q = var.get("query")
        if datasource_uid(var.get("datasource")) == CLOUDWATCH_UID and isinstance(q, dict) and q.get("metricName"):
            # A dimension-values variable lists the values of one dimension of the metric, in
            # whatever dimension sets carry it.
            uses.append(MetricUse(f"{file}: variable {var['name']}", q.get("namespace", ""), q["metricName"],
                                  ((q.get("dimensionKey", ""), None),), exact=False))
    return uses


def cloudwatch_body_uses(body: dict, file: str) -> list[MetricUse]:
    """Every metric the widgets of a CloudWatch dashboard body read. A row is [namespace, name,
    dim, value, ..., {options}]; "." repeats the previous row's item at that position."""
    uses = []
    for n, widget in enumerate(body.get("widgets", [])):
        props = widget.get("properties", {})
        where = f"{file}: widget {n} {props.get('title', widget.get('type'))!r}"
        previous: list = []
        for row in props.get("metrics", []):
            if row and isinstance(row[0], dict):
                uses += search_uses(row[0].get("expression", ""), where)
                continue
            items = [x for x in row if not isinstance(x, dict)]
            items = [previous[i] if x == "." and i < len(previous) else x for i, x in enumerate(items)]
            previous = items
            dims = {items[i]: _fixed(items[i + 1]) for i in range(2, len(items) - 1, 2)}
            uses.append(MetricUse(where, items[0], items[1], tuple(sorted(dims.items(), key=lambda kv: kv[0]))))
    return uses
