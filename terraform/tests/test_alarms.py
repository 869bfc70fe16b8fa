"""The application-metric alarms watch series the binaries really emit.

An EMF metric exists in CloudWatch only under its exact dimension set: `function` (the name the
binary passes to MetricsExport::for_process) plus one dimension per label of the
`metrics::counter!/histogram!/gauge!` call (the metrics_cloudwatch_embedded recorder turns labels
into dimensions). An alarm naming a metric, a dimension or a value the code does not produce
watches nothing and never fires, so these tests read the registrations from the Rust sources
rather than from a list kept here.
"""

from __future__ import annotations

import re
import pytest

from tfconfig import REPO_ROOT, attr, blocks

# Crates whose binaries run on Lambda with EMF, and the source of their `function` dimension.
EMF_CRATES = {"producer-api": "producer-api/src", "stream-consumer": "stream-consumer/src"}

MACRO = re.compile(
    r'metrics::(?P<kind>counter|histogram|gauge)!\(\s*"(?P<name>[a-z0-9_]+)"(?P<labels>(?:\s*,\s*"[a-z_]+"\s*=>\s*[^,)]+(?:\([^)]*\))?)*)\s*\)',
    re.S,
)
LABEL = re.compile(r'"(?P<key>[a-z_]+)"\s*=>\s*(?P<value>"[^"]*"|[^,)]+(?:\([^)]*\))?)')


def emf_namespace() -> str:
    kit = (REPO_ROOT / "service-kit/src/telemetry.rs").read_text()
    return re.search(r'pub const EMF_NAMESPACE: &str = "([^"]+)"', kit).group(1)


def function_name(crate_src: str) -> str:
    main = (REPO_ROOT / crate_src / "main.rs").read_text()
    return re.search(r'MetricsExport::for_process\(\s*"([^"]+)"', main).group(1)


def label_values(value: str, text: str) -> set[str]:
    """A label value's possible literals: the literal itself, the items of a `for x in [...]`
    loop over literals when it is that loop's variable, else "*" (computed at run time)."""
    if value.startswith('"'):
        return {value.strip('"')}
    loop = re.search(rf"for {re.escape(value)} in \[([^\]]*)\]", text)
    if re.fullmatch(r"[a-z_]+", value) and loop and re.fullmatch(r'(\s*"[^"]*"\s*,?)+', loop.group(1)):
        return set(re.findall(r'"([^"]*)"', loop.group(1)))
    return {"*"}


def registrations() -> dict[tuple[str, str], dict[frozenset, dict[str, set]]]:
    """(function, metric) -> label-key set -> label key -> literal values seen ("*" if computed)."""
    found: dict[tuple[str, str], dict[frozenset, dict[str, set]]] = {}
    for src in EMF_CRATES.values():
        function = function_name(src)
        for path in sorted((REPO_ROOT / src).rglob("*.rs")):
            text = path.read_text()
            for m in MACRO.finditer(text):
                labels = {lm["key"]: lm["value"].strip() for lm in LABEL.finditer(m["labels"])}
                by_keys = found.setdefault((function, m["name"]), {})
                values = by_keys.setdefault(frozenset(labels), {k: set() for k in labels})
                for key, value in labels.items():
                    values[key] |= label_values(value, text)
    return found


def for_each_values(tf, expression: str) -> list[str]:
    """The values a dynamic block iterates: a local list, or a literal toset([...])/[...]."""
    local = re.fullmatch(r"\$\{local\.([a-z_]+)\}", expression)
    if local:
        return list(tf.locals[local.group(1)])
    values = re.findall(r"""["']([^"']+)["']""", expression)
    assert values, f"cannot read the values of for_each = {expression}"
    return values


def alarm_metrics(tf, alarm: dict) -> list[tuple[str, str, dict]]:
    """(namespace, metric name, dimensions) of every metric an alarm reads, locals resolved."""
    out = []
    if attr(alarm, "metric_name"):
        out.append((attr(alarm, "namespace"), attr(alarm, "metric_name"), attr(alarm, "dimensions")))
    for query in blocks(alarm, "metric_query"):
        for metric in blocks(query, "metric"):
            out.append((attr(metric, "namespace"), attr(metric, "metric_name"), attr(metric, "dimensions")))
    for dynamic in blocks(alarm, "dynamic"):
        if "metric_query" not in dynamic:
            continue
        body = dynamic["metric_query"]
        content = blocks(body, "content")[0]
        for value in for_each_values(tf, attr(body, "for_each")):
            for metric in blocks(content, "metric"):
                dims = {k: v.replace("${metric_query.value}", value) for k, v in attr(metric, "dimensions").items()}
                out.append((attr(metric, "namespace"), attr(metric, "metric_name"), dims))
    return [(tf.resolve(ns), name, tf.resolve(dims or {})) for ns, name, dims in out]


def emf_alarm_metrics(tf) -> list[tuple[str, str, dict]]:
    namespace = emf_namespace()
    return [
        (alarm_name, metric, dims)
        for alarm_name, alarm in tf.resources["aws_cloudwatch_metric_alarm"].items()
        for ns, metric, dims in alarm_metrics(tf, alarm)
        if ns == namespace
    ]


def test_the_code_registers_metrics_at_all():
    """Guards the parser: if the macro syntax changes, the checks below must not pass vacuously."""
    found = registrations()
    assert ("stream-consumer", "consumer_quarantined_total") in found
    assert ("producer-api", "producer_events_total") in found
    assert found[("stream-consumer", "consumer_batches_total")][frozenset({"outcome"})]["outcome"] == {"ok", "failed"}
    assert "*" in found[("stream-consumer", "consumer_quarantined_total")][frozenset({"reason"})]["reason"]


def test_application_alarms_use_the_emf_namespace(tf):
    """Every alarm on an application metric reads it from EMF_NAMESPACE, not a typo of it."""
    app_metric = re.compile(r"^(producer|consumer)_")
    for alarm_name, alarm in tf.resources["aws_cloudwatch_metric_alarm"].items():
        for ns, metric, _ in alarm_metrics(tf, alarm):
            if app_metric.match(metric or ""):
                assert ns == emf_namespace(), f"{alarm_name}: {metric} read from {ns}"
    with_emf = {alarm_name for alarm_name, _, _ in emf_alarm_metrics(tf)}
    assert {"consumer_batches_failed", "consumer_quarantine_ratio", "producer_unaccepted_ratio"} <= with_emf, with_emf


def test_every_emf_alarm_metric_is_emitted_with_that_dimension_set(tf):
    found = registrations()
    for alarm_name, metric, dims in emf_alarm_metrics(tf):
        function = dims.get("function")
        assert function in {function_name(src) for src in EMF_CRATES.values()}, f"{alarm_name}: function={function!r}"
        assert (function, metric) in found, f"{alarm_name}: {function} never emits {metric}"
        labels = frozenset(dims) - {"function"}
        variants = found[(function, metric)]
        assert labels in variants, (
            f"{alarm_name}: {metric} is emitted with labels {sorted(map(sorted, variants))}, "
            f"the alarm asks for {sorted(labels)}: that series does not exist"
        )
        for key in labels:
            literal = variants[labels][key] - {"*"}
            if "*" not in variants[labels][key]:
                assert dims[key] in literal, f"{alarm_name}: {metric}{{{key}={dims[key]!r}}} is never emitted ({sorted(literal)})"


def test_quarantine_alarm_covers_every_reason_the_lambda_handler_reports(tf):
    """`reason` is computed (the decoder's reason_code), so its values come from the registered
    list: all of QUARANTINE_REASONS except batch_failed, which only the local runner reports."""
    telemetry = (REPO_ROOT / "stream-consumer/src/telemetry.rs").read_text()
    block = re.search(r"QUARANTINE_REASONS: \[&str; \d+\] = \[(.*?)\];", telemetry, re.S).group(1)
    code_reasons = re.findall(r'"([a-z0-9_]+)"', block)
    assert "batch_failed" in code_reasons
    callers = [
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "stream-consumer/src").rglob("*.rs")
        if re.search(r"\.dead_letter_batch\(", p.read_text())
    ]
    assert callers == ["stream-consumer/src/runner.rs"], f"batch_failed is reported from {callers}: alarm on it too"
    alarm_reasons = [
        dims["reason"]
        for alarm_name, metric, dims in emf_alarm_metrics(tf)
        if alarm_name == "consumer_quarantine_ratio" and metric == "consumer_quarantined_total"
    ]
    assert sorted(alarm_reasons) == sorted(r for r in code_reasons if r != "batch_failed")


@pytest.mark.parametrize("alarm_name", ["consumer_quarantine_ratio", "producer_unaccepted_ratio", "api_5xx_rest", "api_5xx_http"])
def test_metric_math_alarms_fit_cloudwatch_limits(tf, alarm_name):
    """At most 10 metrics per metric-math alarm (a hard CloudWatch limit) and exactly one
    returned expression."""
    alarm = tf.resource("aws_cloudwatch_metric_alarm", alarm_name)
    assert len(alarm_metrics(tf, alarm)) <= 10
    returned = [attr(q, "id") for q in blocks(alarm, "metric_query") if attr(q, "return_data") is True]
    assert returned == ["ratio"], returned
    assert attr(alarm, "metric_name") is None and attr(alarm, "statistic") is None


def test_every_alarm_says_why_it_treats_missing_data_as_it_does(tf):
    """Each treat_missing_data has its reason in the comment right above it."""
    seen = 0
    for path in (REPO_ROOT / "terraform/alarms.tf", REPO_ROOT / "terraform/compactor.tf"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.match(r"\s*treat_missing_data\s*=", line):
                seen += 1
                comment = []
                for above in reversed(lines[:i]):
                    if not above.strip().startswith("#"):
                        break
                    comment.append(above)
                text = " ".join(comment)
                assert re.search(r"\b(breaching|notBreaching)\b", text, re.I) and len(text) > 60, f"{path.name}:{i + 1}: no reason given"
    assert seen == sum(1 for _ in tf.resources["aws_cloudwatch_metric_alarm"]), "an alarm without treat_missing_data"
    for alarm_name, alarm in tf.resources["aws_cloudwatch_metric_alarm"].items():
        assert attr(alarm, "treat_missing_data") in {"breaching", "notBreaching", "${local.traffic_missing_data}"}, alarm_name
