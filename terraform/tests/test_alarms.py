"""The alarms watch series that exist, and each says why it treats missing data as it does.

An EMF metric exists in CloudWatch only under its exact dimension set: `function` (the name the
binary passes to MetricsExport::for_process) plus one dimension per label of the
`metrics::counter!/histogram!/gauge!` call. An alarm naming a metric, a dimension or a value the
code does not produce watches nothing and never fires. The registrations are read from the Rust
sources by grafana/tests/emitted_metrics.py, and every alarm is held to them by the same
emitted_metrics.problems() that checks the dashboards, rather than by a list kept here.
"""

from __future__ import annotations

import re
import sys

import pytest

from tfconfig import REPO_ROOT, Config, attr, blocks, hcl2

sys.path.insert(0, str(REPO_ROOT / "grafana" / "tests"))
import emitted_metrics as em  # noqa: E402  (grafana/tests: the parser of the code's metric registrations)
from dashlib import MetricUse, search_uses  # noqa: E402


def _value(tf: Config, value) -> str:
    """A namespace or dimension value as the alarm will carry it: a literal, or a local or a
    variable default that is one. Anything else stays as the expression it is, so a value that
    cannot be read here fails the check instead of passing as "chosen at deploy time"."""
    value = tf.resolve(value)
    var = re.fullmatch(r"\$\{var\.([A-Za-z0-9_]+)\}", str(value))
    if var and var.group(1) in tf.variables and isinstance(tf.default(var.group(1)), str):
        return tf.default(var.group(1))
    return str(value)


def _dims(tf: Config, value) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, _value(tf, v)) for k, v in (value or {}).items()))


def _for_each_values(tf: Config, expression: str) -> list[str]:
    """The values a dynamic block iterates: a local list, or a literal toset([...]) / [...]."""
    local = re.fullmatch(r"\$\{local\.([A-Za-z0-9_]+)\}", expression)
    if local:
        return list(tf.locals[local.group(1)])
    values = re.findall(r"""["']([^"']+)["']""", expression)
    assert values, f"cannot read the values of for_each = {expression}"
    return values


def _substitute(body, old: str, new: str):
    """`body` (a parsed block) with `old` replaced by `new` in every string."""
    if isinstance(body, dict):
        return {k: _substitute(v, old, new) for k, v in body.items()}
    if isinstance(body, list):
        return [_substitute(v, old, new) for v in body]
    return body.replace(old, new) if isinstance(body, str) else body


_EACH = re.compile(r"\$\{each\.(key|value)((?:\.[A-Za-z0-9_]+)*)\}")
_FOR_LOCAL = re.compile(r"\$\{\{for\s+(\w+)\s*,\s*(\w+)\s+in\s+local\.(\w+)\s*:\s*\1\s*=>\s*\2(?:\s+if\s.*)?\}\}")


def _for_each_items(tf: Config, for_each) -> list[tuple[str, object]]:
    """The instances a resource's for_each makes, as (each.key, each.value): a literal map, a
    local map, or `{ for k, v in local.map : k => v if ... }`. The `if` is not evaluated, so
    every entry some deployment would have is checked."""
    if isinstance(for_each, dict):
        return list(for_each.items())
    local = re.fullmatch(r"\$\{local\.([A-Za-z0-9_]+)\}", str(for_each)) or _FOR_LOCAL.fullmatch(str(for_each))
    name = local and local.groups()[-1]
    assert name and isinstance(tf.locals.get(name), dict), f"cannot read the instances of for_each = {for_each}"
    return list(tf.locals[name].items())


def _bind(body, key: str, value):
    """`body` (a parsed block) with each.key, each.value and each.value.<attr> replaced: a string
    that is only the reference becomes the value itself (a map stays a map), one inside a longer
    string is replaced by the value's text."""
    if isinstance(body, dict):
        return {k: _bind(v, key, value) for k, v in body.items()}
    if isinstance(body, list):
        return [_bind(v, key, value) for v in body]
    if not isinstance(body, str):
        return body

    def lookup(m: re.Match):
        found = key if m.group(1) == "key" else value
        for part in m.group(2).split(".")[1:]:
            found = found[part]
        return found

    whole = _EACH.fullmatch(body)
    return lookup(whole) if whole else _EACH.sub(lambda m: str(lookup(m)), body)


def alarm_instances(tf: Config, name: str, alarm: dict) -> list[tuple[str, dict]]:
    """An alarm resource's instances as (name, body): itself, or one per for_each entry with
    `each` bound, named like its address (`rds["cpu"]`)."""
    for_each = attr(alarm, "for_each")
    if for_each is None:
        return [(name, alarm)]
    return [(f'{name}["{key}"]', _bind(alarm, key, value)) for key, value in _for_each_items(tf, for_each)]


def _query_uses(tf: Config, query: dict, where: str) -> list[MetricUse]:
    uses = []
    if attr(query, "expression"):
        uses += search_uses(str(attr(query, "expression")), where)
    for metric in blocks(query, "metric"):
        uses.append(MetricUse(where, _value(tf, attr(metric, "namespace")), attr(metric, "metric_name"),
                              _dims(tf, attr(metric, "dimensions"))))
    return uses


def alarm_uses(tf: Config, name: str, alarm: dict) -> list[MetricUse]:
    """Every metric one alarm (instance) reads: its own metric_name, the metrics of its
    metric_query blocks (a dynamic one once per for_each value) and the SEARCH()es of their
    expressions."""
    where = f"aws_cloudwatch_metric_alarm.{name}"
    uses = []
    if attr(alarm, "metric_name") is not None:
        uses.append(MetricUse(where, _value(tf, attr(alarm, "namespace")), attr(alarm, "metric_name"),
                              _dims(tf, attr(alarm, "dimensions"))))
    for query in blocks(alarm, "metric_query"):
        uses += _query_uses(tf, query, f"{where} {attr(query, 'id')}")
    for dynamic in blocks(alarm, "dynamic"):
        if "metric_query" not in dynamic:
            continue
        body = dynamic["metric_query"]
        for value in _for_each_values(tf, attr(body, "for_each")):
            for content in blocks(body, "content"):
                query = _substitute(content, "${metric_query.value}", value)
                uses += _query_uses(tf, query, f"{where} dynamic metric_query {value!r}")
    return uses


def all_alarm_uses(tf: Config) -> list[MetricUse]:
    return [u for name, alarm in tf.resources["aws_cloudwatch_metric_alarm"].items()
            for instance, body in alarm_instances(tf, name, alarm) for u in alarm_uses(tf, instance, body)]


SAMPLE_TF = r'''
variable "namespace" {
  default = "WebAnalytics"
}

locals {
  emf_namespace = "WebAnalytics"
  reasons       = ["r1", "r2"]
  per_outcome = {
    ok     = { metric = "each_total", dims = { function = "f", outcome = "ok" } }
    failed = { metric = "each_total", dims = { function = "f", outcome = "failed" } }
  }
}

resource "aws_cloudwatch_metric_alarm" "each_local" {
  for_each    = local.per_outcome
  namespace   = local.emf_namespace
  metric_name = each.value.metric
  dimensions  = each.value.dims
}

resource "aws_cloudwatch_metric_alarm" "each_for" {
  for_each = { for k, v in local.per_outcome : k => v if k == var.namespace }
  metric_query {
    id = "m"
    metric {
      namespace   = "AWS/X"
      metric_name = "${each.key}_count"
      dimensions  = { Name = each.key }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "each_literal" {
  for_each    = { one = "fn-one" }
  namespace   = "AWS/Lambda"
  metric_name = "Errors"
  dimensions  = { FunctionName = each.value }
}

resource "aws_cloudwatch_metric_alarm" "plain" {
  namespace   = var.namespace
  metric_name = "plain_total"
  dimensions  = { function = "f", outcome = "failed" }
}

resource "aws_cloudwatch_metric_alarm" "math" {
  dynamic "metric_query" {
    for_each = local.reasons
    content {
      id = "q${metric_query.key}"
      metric {
        namespace   = local.emf_namespace
        metric_name = "by_reason_total"
        dimensions  = { function = "f", reason = metric_query.value }
      }
    }
  }
  dynamic "metric_query" {
    for_each = toset(["a", "b"])
    content {
      id = metric_query.value
      metric {
        namespace   = "AWS/Lambda"
        metric_name = "Errors"
        dimensions  = { FunctionName = metric_query.value }
      }
    }
  }
  metric_query {
    id         = "s"
    expression = "SUM(SEARCH('{WebAnalytics,function,sink} MetricName=\"searched_seconds\" function=\"f\"', 'Sum', 300))"
  }
  metric_query {
    id = "unread"
    metric {
      namespace   = local.emf_namespace
      metric_name = "unread_total"
      dimensions  = { function = aws_lambda_function.x.function_name }
    }
  }
}
'''


def test_alarm_reader_reads_every_form(tmp_path):
    """Plain alarms, metric_query blocks, dynamic ones over a local list and over toset([...]),
    SEARCH()es, locals and variable defaults, for_each over a local map (directly or through a
    filtering `for`) or a literal one; an expression it cannot evaluate stays visible."""
    if hcl2 is None:
        pytest.skip("hcl2 parser not installed: pip install --require-hashes -r scripts/requirements/terraform.txt")
    (tmp_path / "alarms.tf").write_text(SAMPLE_TF)
    tf = Config(tmp_path)
    got = sorted((u.namespace, u.name, u.dims) for u in all_alarm_uses(tf))
    assert got == sorted([
        ("WebAnalytics", "plain_total", (("function", "f"), ("outcome", "failed"))),
        ("WebAnalytics", "by_reason_total", (("function", "f"), ("reason", "r1"))),
        ("WebAnalytics", "by_reason_total", (("function", "f"), ("reason", "r2"))),
        ("AWS/Lambda", "Errors", (("FunctionName", "a"),)),
        ("AWS/Lambda", "Errors", (("FunctionName", "b"),)),
        ("WebAnalytics", "searched_seconds", (("function", "f"), ("sink", None))),
        ("WebAnalytics", "unread_total", (("function", "${aws_lambda_function.x.function_name}"),)),
        ("WebAnalytics", "each_total", (("function", "f"), ("outcome", "ok"))),
        ("WebAnalytics", "each_total", (("function", "f"), ("outcome", "failed"))),
        ("AWS/X", "ok_count", (("Name", "ok"),)),
        ("AWS/X", "failed_count", (("Name", "failed"),)),
        ("AWS/Lambda", "Errors", (("FunctionName", "fn-one"),)),
    ])


def test_alarms_cover_lag_errors_failures_and_5xx(tf):
    """The reader sees this stack's alarms, so the check below cannot pass on an empty list."""
    uses = all_alarm_uses(tf)
    names = {u.name for u in uses}
    assert {"IteratorAge", "Errors", "ApproximateNumberOfMessagesVisible", "5XXError", "5xx", "CPUUtilization",
            "FreeStorageSpace", "DatabaseConnections"} <= names
    emf = {u.where.split()[0] for u in uses if u.namespace == em.emf_namespace()}
    assert {f"aws_cloudwatch_metric_alarm.{n}" for n in
            ("consumer_batches_failed", "consumer_quarantine_ratio", "producer_unaccepted_ratio")} <= emf, emf


def test_every_alarm_metric_is_emitted_with_that_dimension_set(tf):
    """Names, exact dimension sets (the `function` name included) and label values, by the same
    check as the dashboards; namespaces are AWS's own or the EMF one."""
    errors = em.problems(all_alarm_uses(tf))
    assert not errors, "\n".join(errors)


def test_quarantine_alarm_covers_every_reason_the_lambda_handler_reports(tf):
    """`reason` is computed (the decoder's reason_code), so the check above cannot pin its values:
    the alarm needs one query per reason the code registers, except batch_failed, which only the
    local runner reports."""
    reasons = set()
    for r in em.registrations():
        if r.name == "consumer_quarantined_total":
            reasons |= set().union(*(v for k, v in r.labels if k == "reason" and v))
    assert "batch_failed" in reasons and len(reasons) > 1, reasons
    callers = [
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "stream-consumer/src").rglob("*.rs")
        if re.search(r"\.dead_letter_batch\(", p.read_text())
    ]
    assert callers and set(callers) <= em.LOCAL_ONLY, f"batch_failed is reported from {callers}: alarm on it too"
    alarm = tf.resource("aws_cloudwatch_metric_alarm", "consumer_quarantine_ratio")
    alarm_reasons = [u.dimensions["reason"] for u in alarm_uses(tf, "consumer_quarantine_ratio", alarm)
                     if u.name == "consumer_quarantined_total"]
    assert sorted(alarm_reasons) == sorted(reasons - {"batch_failed"})


@pytest.mark.parametrize("alarm_name", ["consumer_quarantine_ratio", "producer_unaccepted_ratio", "api_5xx"])
def test_metric_math_alarms_fit_cloudwatch_limits(tf, alarm_name):
    """At most 10 metrics per metric-math alarm (a hard CloudWatch limit) and exactly one
    returned expression, in every instance (api_5xx: the REST and the HTTP API's)."""
    for instance, alarm in alarm_instances(tf, alarm_name, tf.resource("aws_cloudwatch_metric_alarm", alarm_name)):
        assert 0 < len(alarm_uses(tf, instance, alarm)) <= 10, instance
        returned = [attr(q, "id") for q in blocks(alarm, "metric_query") if attr(q, "return_data") is True]
        assert returned == ["ratio"], (instance, returned)
        assert attr(alarm, "metric_name") is None and attr(alarm, "statistic") is None, instance


def test_every_alarm_says_why_it_treats_missing_data_as_it_does(tf):
    """Each treat_missing_data has its reason in the comment right above it."""
    seen = 0
    for file, text in tf.files.items():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if re.match(r"\s*treat_missing_data\s*=", line):
                seen += 1
                comment = []
                for above in reversed(lines[:i]):
                    if not above.strip().startswith("#"):
                        break
                    comment.append(above)
                why = " ".join(comment)
                assert re.search(r"\b(breaching|notBreaching)\b", why, re.I) and len(why) > 60, f"{file}:{i + 1}: no reason given"
    assert seen == sum(1 for _ in tf.resources["aws_cloudwatch_metric_alarm"]), "an alarm without treat_missing_data"
    for alarm_name, alarm in tf.resources["aws_cloudwatch_metric_alarm"].items():
        assert attr(alarm, "treat_missing_data") in {"breaching", "notBreaching", "${local.traffic_missing_data}"}, alarm_name
