#!/usr/bin/env python3
"""Source of truth for the Grafana dashboards in grafana/dashboards/*.json.

    python3 grafana/tools/build_dashboards.py          # rewrite the JSON files
    python3 grafana/tools/build_dashboards.py --check  # exit 1 if a JSON file is out of date

Edit the panels here, regenerate, and commit both; grafana/tests/test_dashboards.py fails when
the committed JSON differs from what this script produces. Standard library only.

Datasource uids (`cloudwatch`, `prometheus`, `loki`, `analytics-postgres`) are the fixed uids
provisioned by grafana/provisioning/datasources/datasources.yml. Prometheus metric names are the
ones in the metrics contract (mirrored by CONTRACT_METRICS in grafana/tests/test_dashboards.py).
The SQL of the PostgreSQL dashboards is not written here: it is read from grafana/sql/<dashboard>/
(one file per panel or variable, its leading comment the panel's description), the one place
grafana/tests/test_site_analytics_queries.py also runs it from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

GRAFANA_DIR = Path(__file__).resolve().parent.parent
OUT_DIR = GRAFANA_DIR / "dashboards"
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
) -> dict:
    defaults: dict = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": _thresholds(thresholds or [("green", None)]),
        "noValue": "no data",
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
                  current: str | None = None) -> dict:
    return cw_var(
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
        [cw_logs(
            ["/aws/lambda/$producer_function", "/aws/lambda/$consumer_function"],
            "fields @timestamp, @log, level, @message\n"
            "| filter level in [\"ERROR\", \"WARN\"] or @message like /(?i)task timed out|runtime exited/\n"
            "| sort @timestamp desc\n"
            "| limit 200",
        )]), w=24, h=10)
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
# Site analytics (PostgreSQL)
# --------------------------------------------------------------------------------------------


def site_analytics(L: Layout) -> list[dict]:
    """For the owner of a site: events and unique visitors per hour, event types and top pages,
    from the consumer's per-site aggregates in PostgreSQL (site_hourly, site_daily_pages; hours
    and days of when events occurred, UTC). Visitors over several hours or days are the
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
    variables = [sql_var("site", "Site", sql.query("site"))]
    sql.check_all_used()
    return variables


# file name -> (builder, title, refresh interval, start of the time range). The dashboard's uid is
# the file name without ".json", its description the builder's docstring, its panels what the
# builder adds to the Layout it is given, its template variables what the builder returns.
DASHBOARDS = {
    "stream-lag-cloudwatch.json": (stream_lag_cloudwatch, "Stream lag (CloudWatch)", "1m", "now-3h"),
    "stream-lag-prometheus.json": (stream_lag_prometheus, "Stream lag (Prometheus)", "10s", "now-30m"),
    "pipeline-cloudwatch.json": (pipeline_cloudwatch, "Pipeline (CloudWatch)", "1m", "now-3h"),
    "pipeline-prometheus.json": (pipeline_prometheus, "Pipeline (Prometheus)", "10s", "now-30m"),
    "logs-loki.json": (logs_loki, "Logs (Loki)", "30s", "now-1h"),
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args()
    stale = []
    for name, text in render_all().items():
        path = OUT_DIR / name
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
