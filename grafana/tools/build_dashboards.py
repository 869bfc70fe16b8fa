#!/usr/bin/env python3
"""Source of truth for the Grafana dashboards in grafana/dashboards/*.json, and for the
CloudWatch dashboard terraform/dashboards.tf deploys (terraform/templates/
cloudwatch-dashboard.json.tftpl, the same panels as "Pipeline on AWS (CloudWatch)").

    python3 grafana/tools/build_dashboards.py          # rewrite the generated files
    python3 grafana/tools/build_dashboards.py --check  # exit 1 if a generated file is out of date

Edit the panels here, regenerate, and commit both; grafana/tests/test_dashboards.py fails when
a committed file differs from what this script produces. Standard library only.

Datasource uids (`cloudwatch`, `prometheus`, `loki`, `analytics-postgres`) are the fixed uids
provisioned by grafana/provisioning/datasources/datasources.yml. Metric names are the ones the code
registers: grafana/tests/emitted_metrics.py reads them from the Rust sources, and
grafana/tests/test_dashboards.py and test_metric_names.py hold every panel to them.
The SQL of the PostgreSQL dashboards is not written here: it is read from grafana/sql/<dashboard>/
(one file per panel or variable, its leading comment the panel's description), the one place
grafana/tests/test_site_analytics_queries.py also runs it from.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

GRAFANA_DIR = Path(__file__).resolve().parent.parent
OUT_DIR = GRAFANA_DIR / "dashboards"
REPO_ROOT = GRAFANA_DIR.parent
# The CloudWatch dashboard body (terraform/dashboards.tf renders it with templatefile()).
CLOUDWATCH_TEMPLATE = REPO_ROOT / "terraform" / "templates" / "cloudwatch-dashboard.json.tftpl"
SQL_DIR = GRAFANA_DIR / "sql"

PROM = {"type": "prometheus", "uid": "prometheus"}
CW = {"type": "cloudwatch", "uid": "cloudwatch"}
LOKI = {"type": "loki", "uid": "loki"}
# Grafana 10.3 renamed the built-in PostgreSQL plugin from `postgres` (still accepted as an alias).
PG = {"type": "grafana-postgresql-datasource", "uid": "analytics-postgres"}

TAGS = ["web-analytics"]
RATE = "$__rate_interval"


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class Layout:
    """Places panels left to right on Grafana's 24-column grid and numbers them 1..n."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.panels: list[dict] = []

    def add(self, panel: dict, w: int = 12, h: int = 8) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)


def _ref_ids(targets: list[dict]) -> list[dict]:
    for i, t in enumerate(targets):
        t.setdefault("refId", chr(ord("A") + i))
    return targets


def prom(expr: str, legend: str = "__auto") -> dict:
    return {
        "datasource": PROM,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
        "instant": False,
    }


def sum_rate(metric: str, by: str = "") -> str:
    """PromQL: the per-second rate of counter `metric` (which may carry a {selector}) summed over
    all its series, or by one label."""
    rate = f"rate({metric}[{RATE}])"
    return f"sum by ({by}) ({rate})" if by else f"sum({rate})"


def rate_by(metric: str, label: str) -> dict:
    """A Prometheus target with one series per value of `label`, named after it."""
    return prom(sum_rate(metric, label), f"{{{{{label}}}}}")


def cw(namespace: str, metric: str, dims: dict, stat: str, label: str) -> dict:
    return {
        "datasource": CW,
        "queryMode": "Metrics",
        "metricQueryType": 0,  # metric search
        "metricEditorMode": 0,  # builder
        "region": "$region",
        "namespace": namespace,
        "metricName": metric,
        "dimensions": dims,
        "matchExact": True,
        "statistic": stat,
        "period": "",
        "id": "",
        "expression": "",
        "label": label,
    }


def cw_logs(log_groups: list[str], query: str) -> dict:
    return {
        "datasource": CW,
        "queryMode": "Logs",
        "region": "$region",
        "id": "",
        "logGroupNames": log_groups,
        "expression": query,
        "statsGroups": [],
    }


def loki(expr: str, legend: str = "", kind: str = "range") -> dict:
    return {
        "datasource": LOKI,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "queryType": kind,
    }


class SqlSource:
    """The SQL files of one dashboard (grafana/sql/<name>/*.sql): each file's leading `--` comment
    describes it, the rest is the query Grafana runs. Every file must be used, so no query in the
    directory goes unchecked or unshown."""

    def __init__(self, name: str) -> None:
        self.dir = SQL_DIR / name
        self.files = {p.stem: p.read_text() for p in sorted(self.dir.glob("*.sql"))}
        self.used: set[str] = set()

    def query(self, stem: str) -> str:
        """The SQL of `stem`.sql without its leading comment."""
        self.used.add(stem)
        lines = self.files[stem].splitlines()
        while lines and lines[0].startswith("--"):
            lines.pop(0)
        return "\n".join(lines).strip()

    def description(self, stem: str) -> str:
        """The leading comment of `stem`.sql as one line of text."""
        text = []
        for line in self.files[stem].splitlines():
            if not line.startswith("--"):
                break
            text.append(line.removeprefix("--").strip())
        return " ".join(text)

    def check_all_used(self) -> None:
        unused = sorted(set(self.files) - self.used)
        assert not unused, f"{self.dir}: files no panel or variable uses: {unused}"


def pg(sql: str, fmt: str) -> dict:
    """A PostgreSQL target running `sql` as written (code mode), as a time series or a table."""
    return {
        "datasource": PG,
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": sql,
    }


def _panel(kind: str, title: str, description: str, targets: list[dict], **body) -> dict:
    """The keys every panel has, in Grafana's order, around the kind-specific `body`."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": targets[0]["datasource"],
        **body,
        "targets": _ref_ids(targets),
    }


def _thresholds(steps: list[tuple[str, float | None]]) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def timeseries(
    title: str,
    description: str,
    targets: list[dict],
    unit: str = "short",
    thresholds: list[tuple[str, float | None]] | None = None,
    stack: bool = False,
) -> dict:
    custom = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "gradientMode": "none",
        "showPoints": "never",
        "spanNulls": False,
        "axisSoftMin": 0,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "line+area" if thresholds else "off"},
    }
    defaults = {
        "unit": unit,
        "custom": custom,
        "color": {"mode": "palette-classic"},
        "thresholds": _thresholds(thresholds or [("green", None)]),
    }
    options = {
        "legend": {
            "displayMode": "table",
            "placement": "bottom",
            "showLegend": True,
            "calcs": ["mean", "max", "lastNotNull"],
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel("timeseries", title, description, targets, fieldConfig={"defaults": defaults, "overrides": []},
                  options=options)


def stat(
    title: str,
    description: str,
    targets: list[dict],
    unit: str = "short",
    thresholds: list[tuple[str, float | None]] | None = None,
    decimals: int | None = None,
    no_value: str = "no data",
) -> dict:
    defaults: dict = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": _thresholds(thresholds or [("green", None)]),
        "noValue": no_value,
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
    }
    return _panel("stat", title, description, targets, fieldConfig={"defaults": defaults, "overrides": []},
                  options=options)


def table(title: str, description: str, targets: list[dict], units: dict[str, str] | None = None) -> dict:
    overrides = [
        {"matcher": {"id": "byName", "options": column}, "properties": [{"id": "unit", "value": unit}]}
        for column, unit in (units or {}).items()
    ]
    defaults = {"custom": {"align": "auto", "cellOptions": {"type": "auto"}}, "color": {"mode": "thresholds"},
                "thresholds": _thresholds([("green", None)])}
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    return _panel("table", title, description, targets, fieldConfig={"defaults": defaults, "overrides": overrides},
                  options=options)


def logs(title: str, description: str, targets: list[dict]) -> dict:
    options = {
        "showTime": True,
        "wrapLogMessage": True,
        "sortOrder": "Descending",
        "enableLogDetails": True,
        "dedupStrategy": "none",
        "prettifyLogMessage": False,
        "showCommonLabels": False,
        "showLabels": False,
    }
    return _panel("logs", title, description, targets, options=options)


def dashboard(uid: str, title: str, description: str, layout: Layout, variables: list[dict],
              refresh: str, time_from: str = "now-1h") -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "utc",
        "time": {"from": time_from, "to": "now"},
        "refresh": refresh,
        "schemaVersion": 39,
        "version": 1,
        "links": [
            {
                "title": "Web analytics dashboards",
                "type": "dashboards",
                "tags": TAGS,
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "annotations": {"list": []},
        "templating": {"list": variables},
        "panels": layout.panels,
    }


def prom_var(name: str, label: str, metric: str, label_name: str) -> dict:
    definition = f"label_values({metric}, {label_name})"
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROM,
        "definition": definition,
        "query": {"query": definition, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,  # on time range change
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "regex": "",
        "hide": 0,
        "options": [],
    }


def query_var(name: str, label: str, datasource: dict, query, refresh: int) -> dict:
    """A single-choice query variable, sorted, visible; `refresh` is Grafana's (1 on load, 2 on
    time range change)."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": datasource,
        "query": query,
        "refresh": refresh,
        "includeAll": False,
        "multi": False,
        "sort": 1,
        "regex": "",
        "hide": 0,
        "options": [],
    }


def cw_var(name: str, label: str, query: dict, current: str | None = None) -> dict:
    var = query_var(name, label, CW, {"refId": "CloudWatchVariableQueryEditor-VariableQuery", **query},
                    refresh=1)  # on dashboard load
    if current is not None:
        var["current"] = {"selected": True, "text": current, "value": current}
    return var


def region_var() -> dict:
    # "default" = the datasource's defaultRegion (AWS_REGION of the Grafana container).
    return cw_var("region", "Region", {"queryType": "regions"}, current="default")


def dimension_var(name: str, label: str, namespace: str, metric: str, key: str,
                  current: str | None = None, regex: str = "") -> dict:
    var = cw_var(
        name,
        label,
        {
            "queryType": "dimensionValues",
            "region": "$region",
            "namespace": namespace,
            "metricName": metric,
            "dimensionKey": key,
            "dimensionFilters": {},
        },
        current=current,
    )
    var["regex"] = regex
    return var


def sql_var(name: str, label: str, sql: str) -> dict:
    """A single-choice variable whose options are the first column of `sql`'s rows, asked again
    when the time range changes."""
    return {**query_var(name, label, PG, sql, refresh=2), "definition": sql, "current": {}}  # on range change


def textbox_var(name: str, label: str, default: str = "") -> dict:
    return {
        "name": name,
        "label": label,
        "type": "textbox",
        "query": default,
        "current": {"selected": False, "text": default, "value": default},
        "hide": 0,
        "options": [],
    }


# Thresholds shared with grafana/prometheus/rules/alerts.yml (ConsumerLagHigh: > 60000 ms).
LAG_STEPS = [("green", None), ("yellow", 10000), ("red", 60000)]

# --------------------------------------------------------------------------------------------
# Stream lag (CloudWatch)
# --------------------------------------------------------------------------------------------


def stream_lag_cloudwatch(L: Layout) -> list[dict]:
    """Kinesis and consumer-Lambda lag on AWS, from CloudWatch metrics."""
    kin = {"StreamName": "$stream_name"}
    fn = {"FunctionName": "$consumer_function"}
    L.add(stat(
        "Kinesis iterator age (max)",
        "GetRecords.IteratorAgeMilliseconds, Maximum: age of the oldest record returned by "
        "GetRecords across all consumers of the stream. Red above 60 s.",
        [cw("AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", kin, "Maximum", "iterator age")],
        unit="ms", thresholds=LAG_STEPS), w=12, h=5)
    L.add(stat(
        "Consumer Lambda IteratorAge (max)",
        "AWS/Lambda IteratorAge of the stream-consumer function: age of the last record in each "
        "batch when the function processed it. Red above 60 s.",
        [cw("AWS/Lambda", "IteratorAge", fn, "Maximum", "IteratorAge")],
        unit="ms", thresholds=LAG_STEPS), w=12, h=5)
    L.add(timeseries(
        "Kinesis GetRecords.IteratorAgeMilliseconds",
        "How far behind the tip of the stream the readers are (Maximum and Average per period).",
        [cw("AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", kin, "Maximum", "max"),
         cw("AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", kin, "Average", "avg")],
        unit="ms", thresholds=LAG_STEPS))
    L.add(timeseries(
        "Consumer Lambda IteratorAge",
        "Lambda event source mapping lag for the stream-consumer function.",
        [cw("AWS/Lambda", "IteratorAge", fn, "Maximum", "max"),
         cw("AWS/Lambda", "IteratorAge", fn, "Average", "avg")],
        unit="ms", thresholds=LAG_STEPS))
    L.add(timeseries(
        "Records in vs out (per period)",
        "IncomingRecords (written by producer-api) vs GetRecords.Records (read by the consumer), "
        "Sum per period. A persistent gap means lag is growing.",
        [cw("AWS/Kinesis", "IncomingRecords", kin, "Sum", "IncomingRecords"),
         cw("AWS/Kinesis", "GetRecords.Records", kin, "Sum", "GetRecords.Records")]))
    L.add(timeseries(
        "Bytes in vs out (per period)",
        "IncomingBytes vs GetRecords.Bytes, Sum per period.",
        [cw("AWS/Kinesis", "IncomingBytes", kin, "Sum", "IncomingBytes"),
         cw("AWS/Kinesis", "GetRecords.Bytes", kin, "Sum", "GetRecords.Bytes")],
        unit="bytes"))
    L.add(timeseries(
        "Provisioned throughput exceeded",
        "Throttled reads and writes (Sum per period). Write throttling makes producer-api retry "
        "PutRecords; read throttling slows the consumer down and grows the iterator age.",
        [cw("AWS/Kinesis", "ReadProvisionedThroughputExceeded", kin, "Sum", "read exceeded"),
         cw("AWS/Kinesis", "WriteProvisionedThroughputExceeded", kin, "Sum", "write exceeded"),
         cw("AWS/Kinesis", "PutRecords.ThrottledRecords", kin, "Sum", "PutRecords throttled records")]))
    L.add(timeseries(
        "Kinesis API latency",
        "Average PutRecords and GetRecords latency.",
        [cw("AWS/Kinesis", "PutRecords.Latency", kin, "Average", "PutRecords"),
         cw("AWS/Kinesis", "GetRecords.Latency", kin, "Average", "GetRecords")],
        unit="ms"))
    return [
        region_var(),
        dimension_var("stream_name", "Stream", "AWS/Kinesis", "IncomingRecords", "StreamName",
                      current="analytics-events"),
        dimension_var("consumer_function", "Consumer function", "AWS/Lambda", "IteratorAge",
                      "FunctionName"),
    ]


# --------------------------------------------------------------------------------------------
# Stream lag (Prometheus)
# --------------------------------------------------------------------------------------------


def quantiles(metric: str, qs=(0.5, 0.9, 0.99), by: str = "") -> list[dict]:
    buckets = sum_rate(f"{metric}_bucket", f"{by}, le" if by else "le")
    return [
        prom(f"histogram_quantile({q}, {buckets})", f"p{round(q * 100)} {{{{{by}}}}}" if by else f"p{round(q * 100)}")
        for q in qs
    ]


def stream_lag_prometheus(L: Layout) -> list[dict]:
    """Consumer lag per shard, throughput and end-to-end latency from the pipeline's Prometheus
    metrics (local runner / containers)."""
    shard = 'shard=~"$shard"'
    L.add(stat(
        "Max lag behind latest",
        "max(consumer_millis_behind_latest): how far the slowest selected shard is behind the tip "
        "of the stream (GetRecords MillisBehindLatest). The ConsumerLagHigh alert fires above "
        "60 s for 5 minutes.",
        [prom(f"max(consumer_millis_behind_latest{{{shard}}})", "max lag")],
        unit="ms", thresholds=LAG_STEPS), w=6, h=5)
    L.add(stat(
        "End-to-end latency p99",
        "99th percentile of now - received_at when the consumer stored an event.",
        quantiles("consumer_end_to_end_latency_seconds", qs=(0.99,)),
        unit="s", thresholds=[("green", None), ("yellow", 10), ("red", 60)]), w=6, h=5)
    L.add(stat(
        "Records consumed /s",
        "Records read from the stream by the consumer.",
        [prom(sum_rate("consumer_records_total"), "records/s")],
        decimals=1), w=6, h=5)
    L.add(stat(
        "Events accepted by producer /s",
        "Events producer-api accepted (written to the stream).",
        [prom(sum_rate('producer_events_total{outcome="accepted"}'), "accepted/s")],
        decimals=1), w=6, h=5)
    L.add(timeseries(
        "Lag behind latest per shard",
        "consumer_millis_behind_latest per shard, and the max over the selected shards.",
        [prom(f"max by (shard) (consumer_millis_behind_latest{{{shard}}})", "{{shard}}"),
         prom(f"max(consumer_millis_behind_latest{{{shard}}})", "max")],
        unit="ms", thresholds=LAG_STEPS))
    L.add(timeseries(
        "End-to-end latency (now - received_at)",
        "Quantiles of consumer_end_to_end_latency_seconds: time from the producer receiving an "
        "event to the consumer storing it.",
        quantiles("consumer_end_to_end_latency_seconds"),
        unit="s"))
    L.add(timeseries(
        "Produced vs consumed (events/s)",
        "Events accepted by producer-api vs records read by the consumer. Consumed below produced "
        "for long means lag is growing.",
        [prom(sum_rate('producer_events_total{outcome="accepted"}'), "produced (accepted)"),
         prom(sum_rate("consumer_records_total"), "consumed (records)")]))
    L.add(timeseries(
        "Consumed bytes/s",
        "Bytes of record data read from the stream by the consumer.",
        [prom(sum_rate("consumer_bytes_total"), "bytes/s")],
        unit="Bps"))
    L.add(timeseries(
        "Producer PutRecords calls and retries",
        "PutRecords calls/s, records retried after partial failures or throttling, and records the "
        "producer gave up on (answered 429/503 to the client).",
        [prom(sum_rate("producer_put_records_calls_total"), "PutRecords calls/s"),
         prom(sum_rate("producer_put_records_retried_records_total") + " or vector(0)",
              "retried records/s"),
         prom(sum_rate("producer_put_records_failed_records_total") + " or vector(0)",
              "failed records/s")]))
    L.add(timeseries(
        "Consumer Kinesis requests by operation",
        "Kinesis API calls made by the local consumer runner (GetRecords, GetShardIterator, ...).",
        [rate_by("consumer_kinesis_requests_total", "op")],
        unit="reqps"))
    return [prom_var("shard", "Shard", "consumer_millis_behind_latest", "shard")]


# --------------------------------------------------------------------------------------------
# Pipeline (CloudWatch)
# --------------------------------------------------------------------------------------------


# WARN/ERROR lines of the functions' structured JSON logs, and the lines Lambda itself writes when
# a function times out or its runtime dies (those have no level field).
WARN_ERROR_INSIGHTS = (
    "fields @timestamp, @log, level, @message\n"
    "| filter level in [\"ERROR\", \"WARN\"] or @message like /(?i)task timed out|runtime exited/\n"
    "| sort @timestamp desc\n"
    "| limit 200"
)


def pipeline_cloudwatch(L: Layout) -> list[dict]:
    """API Gateway and both Lambda functions on AWS, from CloudWatch metrics and logs."""
    api = {"ApiName": "$api_name"}
    prod = {"FunctionName": "$producer_function"}
    cons = {"FunctionName": "$consumer_function"}

    def both(metric: str, stat_: str, suffix: str = "") -> list[dict]:
        return [cw("AWS/Lambda", metric, prod, stat_, f"producer{suffix}"),
                cw("AWS/Lambda", metric, cons, stat_, f"consumer{suffix}")]

    L.add(timeseries(
        "API Gateway requests",
        "Count (Sum per period) of requests to the ingestion API.",
        [cw("AWS/ApiGateway", "Count", api, "Sum", "requests")]), w=8)
    L.add(timeseries(
        "API Gateway 4XX / 5XX",
        "4XXError and 5XXError, Sum per period. 4XX are client errors (validation, payload too "
        "large); 5XX are producer failures or throttling.",
        [cw("AWS/ApiGateway", "4XXError", api, "Sum", "4XX"),
         cw("AWS/ApiGateway", "5XXError", api, "Sum", "5XX")]), w=8)
    L.add(timeseries(
        "API Gateway latency",
        "Latency (whole request) p50/p99 and IntegrationLatency (producer Lambda) p99.",
        [cw("AWS/ApiGateway", "Latency", api, "p50", "latency p50"),
         cw("AWS/ApiGateway", "Latency", api, "p99", "latency p99"),
         cw("AWS/ApiGateway", "IntegrationLatency", api, "p99", "integration p99")],
        unit="ms"), w=8)
    L.add(timeseries(
        "Lambda invocations",
        "Invocations (Sum per period) of the producer-api and stream-consumer functions.",
        both("Invocations", "Sum")))
    L.add(timeseries(
        "Lambda errors",
        "Errors (Sum per period). Consumer errors make Lambda retry the batch (and eventually "
        "bisect / send it to the on-failure destination).",
        both("Errors", "Sum"), thresholds=[("green", None), ("red", 1)]))
    L.add(timeseries(
        "Lambda throttles",
        "Throttles (Sum per period).",
        both("Throttles", "Sum"), thresholds=[("green", None), ("red", 1)]))
    L.add(timeseries(
        "Lambda duration",
        "Duration Average and p99 per function.",
        both("Duration", "Average", " avg") + both("Duration", "p99", " p99"),
        unit="ms"))
    L.add(timeseries(
        "Lambda concurrent executions",
        "ConcurrentExecutions (Maximum) per function, and for the whole account/region. The "
        "per-function series is only published for functions with reserved concurrency.",
        both("ConcurrentExecutions", "Maximum")
        + [cw("AWS/Lambda", "ConcurrentExecutions", {}, "Maximum", "account total")]), w=24)
    L.add(logs(
        "Lambda warnings and errors (CloudWatch Logs Insights)",
        "WARN/ERROR lines of both functions' structured JSON logs, newest first.",
        [cw_logs(["/aws/lambda/$producer_function", "/aws/lambda/$consumer_function"], WARN_ERROR_INSIGHTS)]),
        w=24, h=10)
    return [
        region_var(),
        dimension_var("api_name", "API", "AWS/ApiGateway", "Count", "ApiName"),
        dimension_var("producer_function", "Producer function", "AWS/Lambda", "Invocations",
                      "FunctionName"),
        dimension_var("consumer_function", "Consumer function", "AWS/Lambda", "IteratorAge",
                      "FunctionName"),
    ]


# --------------------------------------------------------------------------------------------
# Pipeline (Prometheus)
# --------------------------------------------------------------------------------------------


def pipeline_prometheus(L: Layout) -> list[dict]:
    """Producer requests and events, consumer batches, sinks, quarantine and duplicates from the
    pipeline's Prometheus metrics."""
    five_xx = sum_rate('producer_requests_total{status=~"5.."}')
    L.add(stat(
        "Producer requests /s",
        "All HTTP requests answered by producer-api.",
        [prom(sum_rate("producer_requests_total"), "req/s")],
        unit="reqps", decimals=1), w=6, h=5)
    L.add(stat(
        "Producer 5xx ratio",
        "Share of producer-api responses with a 5xx status. The ProducerErrorRate alert fires "
        "above 5% for 5 minutes.",
        [prom(f"({five_xx} or vector(0)) / {sum_rate('producer_requests_total')}", "5xx ratio")],
        unit="percentunit", thresholds=[("green", None), ("yellow", 0.01), ("red", 0.05)]),
        w=6, h=5)
    L.add(stat(
        "Failed consumer batches /s",
        "Batches the consumer could not store (retried, finally dead-lettered).",
        [prom(sum_rate('consumer_batches_total{outcome="failed"}') + " or vector(0)", "failed/s")],
        thresholds=[("green", None), ("red", 0.0001)], decimals=2), w=6, h=5)
    L.add(stat(
        "Quarantined records /s",
        "Records the consumer set aside as invalid (dead-letter), all reasons.",
        [prom(sum_rate("consumer_quarantined_total") + " or vector(0)", "quarantined/s")],
        thresholds=[("green", None), ("yellow", 0.0001)], decimals=2), w=6, h=5)
    L.add(timeseries(
        "Producer requests by status",
        "producer_requests_total rate per HTTP status code.",
        [rate_by("producer_requests_total", "status")],
        unit="reqps", stack=True))
    L.add(timeseries(
        "Producer request latency",
        "p50 and p99 of producer_request_duration_seconds (whole request, including PutRecords "
        "and its retries).",
        quantiles("producer_request_duration_seconds", qs=(0.5, 0.99)),
        unit="s"))
    L.add(timeseries(
        "Producer events by outcome",
        "accepted = written to the stream, rejected = failed validation, unaccepted = valid but "
        "not written (PutRecords budget exhausted; the client was told to retry).",
        [rate_by("producer_events_total", "outcome")],
        stack=True))
    L.add(timeseries(
        "Consumer batches by outcome",
        "consumer_batches_total rate by outcome (ok / failed).",
        [rate_by("consumer_batches_total", "outcome")],
        stack=True))
    L.add(timeseries(
        "Sink latency p99 by sink",
        "99th percentile of consumer_sink_duration_seconds per sink (s3, dynamodb, postgres).",
        quantiles("consumer_sink_duration_seconds", qs=(0.99,), by="sink"),
        unit="s"))
    L.add(timeseries(
        "Sink requests by sink",
        "Requests per second the consumer sends to each sink.",
        [rate_by("consumer_sink_requests_total", "sink")],
        unit="reqps"))
    L.add(timeseries(
        "Quarantined records by reason",
        "consumer_quarantined_total rate per reason. The QuarantineRateHigh alert fires when more "
        "than 1% of consumed records are quarantined for 10 minutes.",
        [rate_by("consumer_quarantined_total", "reason")],
        stack=True))
    L.add(timeseries(
        "Duplicates dropped by scope",
        "Events dropped as duplicates: within one batch, or already seen inside the dedup window.",
        [rate_by("consumer_duplicates_total", "scope")],
        stack=True))
    L.add(timeseries(
        "Consumed vs newly stored events",
        "Records read vs events newly claimed and stored (consumed minus duplicates and "
        "quarantined).",
        [prom(sum_rate("consumer_records_total"), "records consumed/s"),
         prom(sum_rate("consumer_events_stored_total"), "events stored/s")]))
    L.add(timeseries(
        "DynamoDB unprocessed-item retries",
        "BatchWriteItem calls retried because DynamoDB returned UnprocessedItems (throttling).",
        [prom(sum_rate("consumer_dynamodb_unprocessed_retries_total") + " or vector(0)",
              "retries/s")]))
    # Means, not quantiles: most stages take under a millisecond, the first latency bucket.
    def stage_mean(selector: str) -> dict:
        per_stage = [sum_rate(f"consumer_stage_duration_seconds_{part}{{{selector}}}", "stage")
                     for part in ("sum", "count")]
        return prom(" / ".join(per_stage), "{{stage}}")

    L.add(timeseries(
        "Consumer batch time by stage (mean per batch)",
        "consumer_stage_duration_seconds, _sum / _count per stage. These stages run one after "
        "another, so the stack is the mean batch time: decode, claim (the ledger's PostgreSQL "
        "transaction: claim, counts upsert, commit), aggregate (the counts, computed inside that "
        "transaction and taken out of claim), lake_check, parquet, items, write (the concurrent "
        "S3 and DynamoDB writes), and the local runner's checkpoint.",
        [stage_mean('stage!~"s3|dynamodb|prune"')],
        unit="s", stack=True))
    L.add(timeseries(
        "Consumer concurrent writes and pruning (mean)",
        "The two halves of the write stage, which overlap: s3 (PutObject of the lake files) and "
        "dynamodb (BatchWriteItem with its retries); the slower one is the write stage. And "
        "prune, the ledger's pruning, at most every 10 minutes per process (its mean is per "
        "prune, not per batch).",
        [stage_mean('stage=~"s3|dynamodb|prune"')],
        unit="s"))
    return []


# --------------------------------------------------------------------------------------------
# Pipeline on AWS: one panel list, two renderings (Grafana and a CloudWatch dashboard)
# --------------------------------------------------------------------------------------------

# The namespace and `function` dimension of the binaries' EMF metrics (service-kit/src/
# telemetry.rs EMF_NAMESPACE, and the name each main.rs passes to MetricsExport::for_process).
# The `function` value is the binary's, not the deployed Lambda's name, so it is the same in
# every stack. grafana/tests/test_metric_names.py checks both against the Rust code.
EMF = "WebAnalytics"
PRODUCER = "producer-api"
CONSUMER = "stream-consumer"


@dataclass(frozen=True)
class Ref:
    """A deployed resource's name: a dashboard variable in Grafana, a templatefile() variable
    that terraform/dashboards.tf fills in for the CloudWatch dashboard."""

    name: str


# The deployment-specific names the panels refer to: (Grafana label, namespace, metric, dimension
# whose values Grafana offers, the suffix terraform/ puts after var.name). The suffix keeps the
# account's other functions, queues and databases out of the lists, so the first choice is one of
# this pipeline's (grafana/tests/test_dashboards.py checks the suffixes against terraform/).
REFS = {
    "producer_function": ("Producer function", "AWS/Lambda", "Invocations", "FunctionName", "-producer-api"),
    "consumer_function": ("Consumer function", "AWS/Lambda", "IteratorAge", "FunctionName", "-stream-consumer"),
    "failure_queue": ("On-failure queue", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName",
                      "-stream-consumer-failures"),
    "db_instance": ("RDS instance", "AWS/RDS", "CPUUtilization", "DBInstanceIdentifier", "-postgres"),
}
PRODUCER_FN = Ref("producer_function")
CONSUMER_FN = Ref("consumer_function")
FAILURE_QUEUE = Ref("failure_queue")
DB_INSTANCE = Ref("db_instance")


@dataclass(frozen=True)
class Metric:
    """One metric with every dimension it is published with (CloudWatch matches the set exactly)."""

    namespace: str
    name: str
    dims: dict
    stat: str
    label: str


@dataclass(frozen=True)
class Search:
    """Every series of a metric whose dimension set is exactly {function, `by`}, one line per
    value of `by`: for labels whose values the code does not fix in advance (quarantine reasons
    come from the decoder, statuses from HTTP)."""

    name: str
    function: str
    by: str
    stat: str
    # Seconds; a search's period is part of its expression, not chosen by the panel.
    period: int = 300

    def expression(self) -> str:
        return (f"SEARCH('{{{EMF},function,{self.by}}} MetricName=\"{self.name}\" "
                f"function=\"{self.function}\"', '{self.stat}', {self.period})")


@dataclass
class Pane:
    """One panel of both renderings; w and h are on Grafana's 24-column grid, which CloudWatch
    dashboards share."""

    kind: str  # "stat" or "timeseries"
    title: str
    description: str
    series: list
    unit: str = "short"
    thresholds: list | None = None
    stack: bool = False
    w: int = 12
    h: int = 8
    # What a stat shows when the period has no data point.
    no_value: str = "no data"


def emf(name: str, function: str, stat_: str, label: str, **labels: str) -> Metric:
    return Metric(EMF, name, {"function": function, **labels}, stat_, label)


def lambda_metric(name: str, fn: Ref, stat_: str, label: str) -> Metric:
    return Metric("AWS/Lambda", name, {"FunctionName": fn}, stat_, label)


def rds(name: str, stat_: str, label: str) -> Metric:
    return Metric("AWS/RDS", name, {"DBInstanceIdentifier": DB_INSTANCE}, stat_, label)


# The 2 s end-to-end target (service-kit/src/telemetry.rs, LATENCY_BUCKETS).
E2E_STEPS = [("green", None), ("red", 2)]
ANY_STEPS = [("green", None), ("red", 1)]
# EMF leaves out a counter that did not move since the last flush (metrics_cloudwatch_embedded
# emits no zeros), so for the app's counters a gap in a line is zero, not a stopped pipeline.
GAP_IS_ZERO = " EMF publishes nothing for a counter that did not move, so a gap means zero."

AWS_PANES = [
    Pane("stat", "Consumer IteratorAge (max)",
         "AWS/Lambda IteratorAge of the consumer, Maximum: age of the last record of a batch when "
         "the function got it. Red above 60 s.",
         [lambda_metric("IteratorAge", CONSUMER_FN, "Maximum", "IteratorAge")],
         unit="ms", thresholds=LAG_STEPS, w=6, h=5),
    Pane("stat", "End-to-end latency p99",
         "consumer_end_to_end_latency_seconds p99 (EMF): received by the producer to stored by the "
         "consumer, for events stored for the first time. Red above the 2 s target.",
         [emf("consumer_end_to_end_latency_seconds", CONSUMER, "p99", "p99")],
         unit="s", thresholds=E2E_STEPS, w=6, h=5),
    Pane("stat", "Failed batches",
         "consumer_batches_total{outcome=failed} (EMF), Sum: batches the consumer reported failed; "
         "the event source mapping retries them." + GAP_IS_ZERO,
         [emf("consumer_batches_total", CONSUMER, "Sum", "failed", outcome="failed")],
         thresholds=ANY_STEPS, w=6, h=5, no_value="0"),
    Pane("stat", "On-failure queue depth",
         "AWS/SQS ApproximateNumberOfMessagesVisible of the consumer's on-failure queue, Maximum: "
         "descriptors (shard, sequence range) of batches that exhausted their retries. Anything "
         "here must be replayed before the stream's retention ends.",
         [Metric("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": FAILURE_QUEUE},
                 "Maximum", "messages")],
         thresholds=ANY_STEPS, w=6, h=5),
    Pane("timeseries", "Consumer lag: IteratorAge",
         "AWS/Lambda IteratorAge of the consumer, Maximum and Average: how far behind the tip of "
         "the stream the batches it receives are.",
         [lambda_metric("IteratorAge", CONSUMER_FN, "Maximum", "max"),
          lambda_metric("IteratorAge", CONSUMER_FN, "Average", "avg")],
         unit="ms", thresholds=LAG_STEPS),
    Pane("timeseries", "Consumer lag: end-to-end latency",
         "consumer_end_to_end_latency_seconds (EMF) p50 and p99: from the producer receiving an "
         "event to the consumer storing it. The consumer sends up to 100 samples per batch, spread "
         "over the batch's distribution (an EMF line holds at most 100 values per metric).",
         [emf("consumer_end_to_end_latency_seconds", CONSUMER, "p50", "p50"),
          emf("consumer_end_to_end_latency_seconds", CONSUMER, "p99", "p99")],
         unit="s", thresholds=E2E_STEPS),
    Pane("timeseries", "Batches by outcome",
         "consumer_batches_total (EMF) by outcome, Sum per period." + GAP_IS_ZERO,
         [emf("consumer_batches_total", CONSUMER, "Sum", outcome, outcome=outcome)
          for outcome in ("ok", "failed")]),
    Pane("timeseries", "On-failure queue",
         "Descriptors of batches the mapping gave up on: visible now (Maximum) and arriving (Sum "
         "of NumberOfMessagesSent per period).",
         [Metric("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": FAILURE_QUEUE},
                 "Maximum", "visible"),
          Metric("AWS/SQS", "NumberOfMessagesSent", {"QueueName": FAILURE_QUEUE}, "Sum", "sent")],
         thresholds=ANY_STEPS),
    Pane("timeseries", "Quarantined records by reason",
         "consumer_quarantined_total (EMF), one line per reason, Sum per 5 minutes: records set "
         "aside under the lake's dead-letter/ prefix." + GAP_IS_ZERO,
         [Search("consumer_quarantined_total", CONSUMER, "reason", "Sum")], stack=True),
    Pane("timeseries", "Duplicates by scope",
         "consumer_duplicates_total (EMF), Sum per period: events dropped within one batch, or "
         "already stored inside the dedup window." + GAP_IS_ZERO,
         [emf("consumer_duplicates_total", CONSUMER, "Sum", scope, scope=scope)
          for scope in ("batch", "window")], stack=True),
    Pane("timeseries", "Sink latency p99 by sink",
         "consumer_sink_duration_seconds (EMF) p99 per sink: the PostgreSQL ledger, S3 lake "
         "files, DynamoDB items.",
         [emf("consumer_sink_duration_seconds", CONSUMER, "p99", sink, sink=sink)
          for sink in ("postgres", "s3", "dynamodb")], unit="s"),
    Pane("timeseries", "Producer events by outcome",
         "producer_events_total (EMF), Sum per period: accepted (written to the stream), rejected "
         "(failed validation), unaccepted (valid but not written; the client was told to retry)."
         + GAP_IS_ZERO,
         [emf("producer_events_total", PRODUCER, "Sum", outcome, outcome=outcome)
          for outcome in ("accepted", "rejected", "unaccepted")], stack=True),
    Pane("timeseries", "Producer responses by status",
         "producer_requests_total (EMF), one line per HTTP status, Sum per 5 minutes.",
         [Search("producer_requests_total", PRODUCER, "status", "Sum")], stack=True),
    Pane("timeseries", "Lambda errors and throttles",
         "AWS/Lambda Errors and Throttles of both functions, Sum per period. A batch the consumer "
         "reports failed is not an error here (it answers with batchItemFailures): see Failed "
         "batches.",
         [lambda_metric(m, fn, "Sum", f"{who} {m.lower()}")
          for m in ("Errors", "Throttles")
          for who, fn in (("producer", PRODUCER_FN), ("consumer", CONSUMER_FN))],
         thresholds=ANY_STEPS),
    Pane("timeseries", "RDS CPU",
         "AWS/RDS CPUUtilization of the PostgreSQL instance, Average and Maximum.",
         [rds("CPUUtilization", "Average", "avg"), rds("CPUUtilization", "Maximum", "max")],
         unit="percent", w=8),
    Pane("timeseries", "RDS connections",
         "AWS/RDS DatabaseConnections, Maximum: connections open on the instance (the consumers', "
         "the compactor's, Grafana's; RDS Proxy's own when it is enabled).",
         [rds("DatabaseConnections", "Maximum", "connections")], w=8),
    Pane("timeseries", "RDS free storage",
         "AWS/RDS FreeStorageSpace, Minimum.",
         [rds("FreeStorageSpace", "Minimum", "free")], unit="bytes", w=8),
]
# CloudWatch widgets have no units, only an axis label.
AXIS_LABELS = {"ms": "milliseconds", "s": "seconds", "percent": "percent", "bytes": "bytes"}


def grafana_target(series) -> dict:
    def value(v):
        return f"${v.name}" if isinstance(v, Ref) else v

    if isinstance(series, Search):
        return {
            "datasource": CW,
            "queryMode": "Metrics",
            "metricQueryType": 0,  # metric search
            "metricEditorMode": 1,  # code: the expression as written
            "region": "$region",
            "id": "",
            "expression": series.expression(),
            "label": f"${{PROP('Dim.{series.by}')}}",
        }
    return cw(series.namespace, series.name, {k: value(v) for k, v in series.dims.items()},
              series.stat, series.label)


def pipeline_aws_cloudwatch(L: Layout) -> list[dict]:
    """The pipeline on AWS in one pane: consumer lag, failed and quarantined batches,
    duplicates, sink latency, producer outcomes, the on-failure queue and PostgreSQL, the
    application's EMF metrics (namespace WebAnalytics) beside the AWS ones."""
    for pane in AWS_PANES:
        targets = [grafana_target(s) for s in pane.series]
        if pane.kind == "stat":
            panel = stat(pane.title, pane.description, targets, unit=pane.unit, thresholds=pane.thresholds,
                         no_value=pane.no_value)
        else:
            panel = timeseries(pane.title, pane.description, targets, unit=pane.unit,
                               thresholds=pane.thresholds, stack=pane.stack)
        L.add(panel, w=pane.w, h=pane.h)
    variables = [region_var()]
    for name, (label, namespace, metric, key, suffix) in REFS.items():
        # Written into the regex as is: letters, digits and hyphens mean themselves there.
        assert re.fullmatch(r"[-a-z0-9]+", suffix), suffix
        variables.append(dimension_var(name, label, namespace, metric, key, regex=f"/{suffix}$/"))
    return variables


def _tf_escape(text: str) -> str:
    """Text that templatefile() renders back as itself."""
    return text.replace("${", "$${").replace("%{", "%%{")


def cloudwatch_dashboard_template() -> str:
    """The CloudWatch dashboard body of AWS_PANES as a templatefile() template: `${region}` and
    one variable per REFS entry, filled in by terraform/dashboards.tf."""

    def value(v):
        return f"${{{v.name}}}" if isinstance(v, Ref) else _tf_escape(v)

    layout = Layout()
    for pane in AWS_PANES:
        layout.add({}, w=pane.w, h=pane.h)
    header = 2
    about = " ".join(pipeline_aws_cloudwatch.__doc__.split())
    widgets = [{
        "type": "text", "x": 0, "y": 0, "width": 24, "height": header,
        "properties": {"markdown": _tf_escape(
            f"## Pipeline on AWS\n{about} The panels' descriptions are in the Grafana dashboard "
            f"\"{DASHBOARDS[AWS_DASHBOARD][1]}\"; both are generated by grafana/tools/build_dashboards.py.")},
    }]
    for pane, placed in zip(AWS_PANES, layout.panels):
        metrics = []
        for i, s in enumerate(pane.series, 1):
            if isinstance(s, Search):
                metrics.append([{"expression": _tf_escape(s.expression()), "id": f"e{i}", "period": s.period}])
            else:
                dims = [part for k, v in s.dims.items() for part in (k, value(v))]
                metrics.append([s.namespace, s.name, *dims, {"stat": s.stat, "label": _tf_escape(s.label)}])
        props = {
            "title": _tf_escape(pane.title),
            "region": "${region}",
            "metrics": metrics,
            "view": "singleValue" if pane.kind == "stat" else "timeSeries",
            "stacked": pane.stack,
            # Stats show the last 5 minutes; lines one point a minute, the EMF flush granularity.
            "period": 300 if pane.kind == "stat" else 60,
        }
        if pane.kind == "stat":
            props["sparkline"] = True
        else:
            props["yAxis"] = {"left": {"min": 0, "showUnits": False, "label": AXIS_LABELS.get(pane.unit, "")}}
        red = [v for color, v in pane.thresholds or [] if color == "red"]
        if red:
            props["annotations"] = {"horizontal": [{"value": red[0], "color": "#d62728"}]}
        g = placed["gridPos"]
        widgets.append({"type": "metric", "x": g["x"], "y": g["y"] + header, "width": g["w"],
                        "height": g["h"], "properties": props})
    body = {"start": "-PT3H", "periodOverride": "inherit", "widgets": widgets}
    return json.dumps(body, indent=2) + "\n"


# --------------------------------------------------------------------------------------------
# Logs (Loki)
# --------------------------------------------------------------------------------------------


def logs_loki(L: Layout) -> list[dict]:
    """Container and host logs collected by Promtail on the observability host."""
    L.add(timeseries(
        "Log lines by job",
        "Lines ingested by Promtail per job (docker = container logs, varlogs = /var/log/*.log).",
        [loki('sum by (job) (count_over_time({job=~".+"}[$__interval]))', "{{job}}")],
        stack=True))
    L.add(timeseries(
        "Warning and error lines",
        "Lines whose JSON level is WARN or ERROR (the pipeline's structured logs) or that contain "
        "'error'.",
        [loki('sum by (job) (count_over_time({job=~".+"} '
              '|~ `(?i)"level":\\s*"(warn|error)"|\\berror\\b` [$__interval]))', "{{job}}")],
        stack=True, thresholds=[("green", None), ("red", 1)]))
    L.add(logs(
        "Container logs",
        "Docker container logs on the observability host (json-file driver). Filter with the "
        "search box.",
        [loki('{job="docker"} |= `$search`')]), w=24, h=12)
    L.add(logs(
        "Host logs (/var/log/*.log)",
        "Log files of the host, filtered with the search box.",
        [loki('{job="varlogs"} |= `$search`')]), w=24, h=10)
    return [textbox_var("search", "Search")]


# --------------------------------------------------------------------------------------------
# Logs (CloudWatch)
# --------------------------------------------------------------------------------------------


def logs_cloudwatch(L: Layout) -> list[dict]:
    """The Lambda functions' logs on AWS, read with CloudWatch Logs Insights: what the Loki
    dashboard is on the local compose profile, for the AWS host, which runs Grafana alone."""
    groups = [f"/aws/lambda/${name}" for name in LOG_FUNCTIONS]
    L.add(logs(
        "Warnings and errors",
        "WARN/ERROR lines of the producer, consumer, compactor and forget functions, and Lambda's own "
        "timeout and runtime-exit lines, newest first (@log names the function's log group).",
        [cw_logs(groups, WARN_ERROR_INSIGHTS)]), w=24, h=12)
    L.add(logs(
        "Search",
        "Lines of the four functions that contain the search box's text (case-sensitive; every "
        "line when it is empty), newest first, at most 500.",
        [cw_logs(groups, "fields @timestamp, @log, level, @message\n"
                         "| filter @message like \"$search\"\n"
                         "| sort @timestamp desc\n"
                         "| limit 500")]), w=24, h=14)
    variables = [region_var()]
    for name, (label, metric, suffix) in LOG_FUNCTIONS.items():
        variables.append(dimension_var(name, label, "AWS/Lambda", metric, "FunctionName", regex=f"/{suffix}$/"))
    return variables + [textbox_var("search", "Search")]


# The functions whose log groups (/aws/lambda/<name>) the logs dashboard reads: variable -> (label,
# an AWS/Lambda metric the function publishes, the suffix Terraform gives its name).
LOG_FUNCTIONS = {
    "producer_function": ("Producer function", "Invocations", "-producer-api"),
    "consumer_function": ("Consumer function", "IteratorAge", "-stream-consumer"),
    "compactor_function": ("Compactor function", "Invocations", "-compactor"),
    "forget_function": ("Forget function", "Invocations", "-forget"),
}


# --------------------------------------------------------------------------------------------
# Site analytics (PostgreSQL)
# --------------------------------------------------------------------------------------------


def site_analytics(L: Layout) -> list[dict]:
    """For the owner of a site: events and unique visitors per hour, event types, top pages and
    visitor countries, from the consumer's per-site aggregates in PostgreSQL (site_hourly,
    site_daily_pages, site_daily_countries; hours and days of when events occurred, UTC). Visitors over several hours or days are the
    cardinality of the union of their HyperLogLog sketches, never a sum."""
    sql = SqlSource("site_analytics")

    def one(stem: str, fmt: str) -> tuple[str, list[dict]]:
        return sql.description(stem), [pg(sql.query(stem), fmt)]

    L.add(stat("Events", *one("events_total", "table")), w=12, h=4)
    L.add(stat("Unique visitors", *one("visitors_total", "table")), w=12, h=4)
    L.add(timeseries("Events per hour", *one("events_per_hour", "time_series"), stack=True))
    L.add(timeseries("Unique visitors per hour", *one("visitors_per_hour", "time_series")))
    L.add(table("Event types", *one("event_types", "table"), units={"share": "percentunit"}), w=10, h=10)
    L.add(table("Top pages", *one("top_pages", "table")), w=14, h=10)
    L.add(table("Countries", *one("countries", "table")), w=10, h=10)
    variables = [sql_var("site", "Site", sql.query("site"))]
    sql.check_all_used()
    return variables


AWS_DASHBOARD = "pipeline-aws-cloudwatch.json"

# file name -> (builder, title, refresh interval, start of the time range). The dashboard's uid is
# the file name without ".json", its description the builder's docstring, its panels what the
# builder adds to the Layout it is given, its template variables what the builder returns.
DASHBOARDS = {
    "stream-lag-cloudwatch.json": (stream_lag_cloudwatch, "Stream lag (CloudWatch)", "1m", "now-3h"),
    "stream-lag-prometheus.json": (stream_lag_prometheus, "Stream lag (Prometheus)", "10s", "now-30m"),
    "pipeline-cloudwatch.json": (pipeline_cloudwatch, "Pipeline (CloudWatch)", "1m", "now-3h"),
    "pipeline-prometheus.json": (pipeline_prometheus, "Pipeline (Prometheus)", "10s", "now-30m"),
    "pipeline-aws-cloudwatch.json": (pipeline_aws_cloudwatch, "Pipeline on AWS (CloudWatch)", "1m", "now-3h"),
    "logs-loki.json": (logs_loki, "Logs (Loki)", "30s", "now-1h"),
    "logs-cloudwatch.json": (logs_cloudwatch, "Logs (CloudWatch)", "1m", "now-1h"),
    "site-analytics.json": (site_analytics, "Site analytics", "5m", "now-7d"),
}


def render(name: str) -> dict:
    build, title, refresh, time_from = DASHBOARDS[name]
    assert build.__doc__, f"{build.__name__} needs its docstring: it is the dashboard description"
    layout = Layout()
    variables = build(layout)
    description = " ".join(build.__doc__.split())
    return dashboard(name.removesuffix(".json"), title, description, layout, variables, refresh, time_from)


def render_all() -> dict[str, str]:
    return {name: json.dumps(render(name), indent=2) + "\n" for name in DASHBOARDS}


def render_terraform() -> dict[Path, str]:
    """Generated files outside grafana/dashboards/: the CloudWatch dashboard's template."""
    return {CLOUDWATCH_TEMPLATE: cloudwatch_dashboard_template()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args()
    stale = []
    outputs = {OUT_DIR / name: text for name, text in render_all().items()} | render_terraform()
    for path, text in outputs.items():
        name = str(path.relative_to(REPO_ROOT))
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
            print(f"wrote {path}")
    if args.check and stale:
        print("out of date (run python3 grafana/tools/build_dashboards.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
