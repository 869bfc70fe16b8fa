"""Every application metric a dashboard or alarm reads on AWS is one the code emits.

The list of what the code emits is not kept by hand: emitted_metrics.py parses the Rust
registrations (`metrics::counter!` / `gauge!` / `histogram!`) and derives the EMF names and
dimension sets from how service-kit's recorder publishes them. The readers checked are the Grafana
dashboards (grafana/dashboards/*.json), the CloudWatch dashboard body
(terraform/templates/cloudwatch-dashboard.json.tftpl) and every aws_cloudwatch_metric_alarm in
terraform/*.tf. A reader of a metric nobody emits shows "no data" and an alarm on it never fires,
which on AWS looks the same as a healthy pipeline.
"""

from __future__ import annotations

import json
import re
import sys

import pytest

import emitted_metrics as em
from dashlib import (
    DASHBOARD_DIR,
    REPO_ROOT,
    MetricUse,
    cloudwatch_body_uses,
    grafana_cloudwatch_uses,
    load_dashboards,
    search_uses,
)

TF_DIR = REPO_ROOT / "terraform"
CLOUDWATCH_TEMPLATE = TF_DIR / "templates" / "cloudwatch-dashboard.json.tftpl"
sys.path.insert(0, str(TF_DIR / "tests"))
import tfconfig  # noqa: E402  (terraform/tests: the hcl2-based reader of terraform/*.tf)

# --------------------------------------------------------------------------------------------
# The parser: it must find what is there, and nothing that is not
# --------------------------------------------------------------------------------------------


def test_parser_finds_the_codes_registrations():
    regs = em.registrations()
    assert regs, "no metric registrations found in the Rust sources: the parser is broken"
    assert {r.kind for r in regs} >= {"counter", "histogram"}
    # Every macro occurrence was understood (parse_registrations raises on forms it cannot read).
    assert len(regs) == em.macro_count()
    assert em.emf_series(), "no EMF series derived from the registrations"
    assert set(em.function_by_crate()) >= {"producer-api", "stream-consumer"}
    assert "function" in em.emf_default_dimensions()


def test_local_only_code_really_is_off_lambda():
    """LOCAL_ONLY leaves the local runner's metrics out of EMF: that holds while main.rs hands
    the process to the Lambda runtime before it builds the runner."""
    paths = {r.path for r in em.registrations()}
    for rel in em.LOCAL_ONLY:
        assert (REPO_ROOT / rel).is_file(), f"{rel} is gone: update emitted_metrics.LOCAL_ONLY"
        assert rel in paths, f"{rel} registers no metric any more: drop it from LOCAL_ONLY"
    main = (REPO_ROOT / "stream-consumer/src/main.rs").read_text()
    lambda_run, runner = main.find("lambda_runtime::run("), main.find("Runner {")
    assert 0 <= lambda_run < runner, "main.rs no longer returns into the Lambda runtime before the runner"
    assert re.search(r"if\s+telemetry::on_lambda\(\)\s*\{", main[:lambda_run])


SAMPLE = r'''
pub const STAGE: &str = "sample_stage_seconds";
const KINDS: [&str; 2] = ["a", "b"];
// metrics::counter!("in_a_comment_total").increment(1);
/* metrics::counter!("in_a_block_comment_total") */
fn f(reason: String) {
    let s = "metrics::counter!(\"in_a_string_total\")";
    let r = r#"counter!("in_a_raw_string_total")"#;
    let quote = '"';
    metrics::counter!("plain_total").increment(1);
    metrics::counter!(
        "multi_line_total",
        "status" => response.status().as_str().to_owned(),
        "kind" => "fixed".to_owned()
    )
    .increment(1);
    metrics::histogram!(STAGE, "stage" => "decode").record(1.0);
    for kind in KINDS {
        metrics::gauge!("looped", "kind" => kind).set(1.0);
    }
    for scope in ["x", "y"] {
        counter!("inline_loop_total", "scope" => scope).increment(0);
    }
    metrics::counter!("dynamic_total", "reason" => reason.clone()).increment(1);
}

#[cfg(test)]
mod tests {
    fn g() { metrics::counter!("test_only_total").increment(1); }
}
'''


def test_parser_reads_each_form_and_skips_comments_strings_and_tests():
    regs = em.parse_registrations({"demo/src/lib.rs": SAMPLE})
    got = {(r.kind, r.name, r.labels) for r in regs}
    assert got == {
        ("counter", "plain_total", ()),
        ("counter", "multi_line_total", (("status", None), ("kind", frozenset({"fixed"})))),
        ("histogram", "sample_stage_seconds", (("stage", frozenset({"decode"})),)),
        ("gauge", "looped", (("kind", frozenset({"a", "b"})),)),
        ("counter", "inline_loop_total", (("scope", frozenset({"x", "y"})),)),
        ("counter", "dynamic_total", (("reason", None),)),
    }
    assert {r.line for r in regs if r.name == "plain_total"} == {10}


@pytest.mark.parametrize("source", [
    'fn f(n: &str) { metrics::counter!(n).increment(1); }',
    'fn f() { metrics::counter!("x_total", &labels).increment(1); }',
    'fn f() { metrics::counter!(target: "t", "x_total").increment(1); }',
])
def test_parser_refuses_what_it_cannot_read(source):
    with pytest.raises(em.ParseError):
        em.parse_registrations({"demo/src/lib.rs": source})


def test_emf_names_carry_no_prometheus_suffixes():
    """The EMF recorder publishes a histogram under its own name, with its values; the `_bucket`
    / `_sum` / `_count` series exist on Prometheus only."""
    histograms = {r.name for r in em.registrations() if r.kind == "histogram"}
    assert histograms
    emf_names = {s.name for s in em.emf_series()}
    assert histograms <= emf_names | {r.name for r in em.registrations() if r.path in em.LOCAL_ONLY}
    assert not {n for n in emf_names if n.endswith(("_bucket", "_sum", "_count"))}
    assert {f"{h}_count" for h in histograms} <= em.prometheus_names()


# --------------------------------------------------------------------------------------------
# The readers
# --------------------------------------------------------------------------------------------


def _resolve(tf, value):
    """A namespace or dimension value from HCL: a literal, a local or a variable default, or None."""
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\$\{(local|var)\.([A-Za-z0-9_]+)\}", value)
    if m:
        found = tf.locals.get(m.group(2)) if m.group(1) == "local" else tf.default(m.group(2))
        return found if isinstance(found, str) and "${" not in found else None
    return None if "${" in value else value


def _alarm_dims(tf, value) -> tuple[tuple[str, str | None], ...]:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict):
        return ()
    return tuple(sorted((k, _resolve(tf, tfconfig.attr(value, k))) for k in value))


def alarm_uses() -> list[MetricUse]:
    """Metrics read by every aws_cloudwatch_metric_alarm in terraform/*.tf, including the metrics
    of metric_query blocks and the SEARCH()es of their expressions."""
    if tfconfig.hcl2 is None:
        pytest.skip("hcl2 parser not installed (scripts/requirements/terraform.txt)")
    tf = tfconfig.Config(TF_DIR)
    uses = []
    for name, alarm in tf.resources.get("aws_cloudwatch_metric_alarm", {}).items():
        where = f"aws_cloudwatch_metric_alarm.{name}"
        attr = tfconfig.attr
        if attr(alarm, "metric_name") is not None:
            uses.append(MetricUse(where, _resolve(tf, attr(alarm, "namespace")) or str(attr(alarm, "namespace")),
                                  attr(alarm, "metric_name"), _alarm_dims(tf, alarm.get("dimensions"))))
        for query in tfconfig.blocks(alarm, "metric_query"):
            if attr(query, "expression"):
                uses += search_uses(str(attr(query, "expression")), f"{where} {attr(query, 'id')}")
            for metric in tfconfig.blocks(query, "metric"):
                uses.append(MetricUse(f"{where} {attr(query, 'id')}",
                                      _resolve(tf, attr(metric, "namespace")) or str(attr(metric, "namespace")),
                                      attr(metric, "metric_name"), _alarm_dims(tf, metric.get("dimensions"))))
    return uses


def grafana_uses() -> list[MetricUse]:
    return [u for name, d in load_dashboards().items() for u in grafana_cloudwatch_uses(d, name)]


def cloudwatch_dashboard_uses() -> list[MetricUse]:
    return cloudwatch_body_uses(json.loads(CLOUDWATCH_TEMPLATE.read_text()), CLOUDWATCH_TEMPLATE.name)


READERS = {"grafana": grafana_uses, "cloudwatch-dashboard": cloudwatch_dashboard_uses, "alarms": alarm_uses}


def problems(use: MetricUse, emitted: dict[em.EmfSeries, em.EmfValues]) -> list[str]:
    """Why `use` matches nothing the code emits (empty when it matches)."""
    sets = {s.dimensions: v for s, v in emitted.items() if s.name == use.name}
    if not sets:
        return [f"{use.where}: {use.name!r} is not a metric the Lambda binaries emit in EMF"]
    dims = use.dimensions
    matching = [v for d, v in sets.items() if (d == set(dims) if use.exact else set(dims) <= d)]
    if not matching:
        return [f"{use.where}: {use.name} has dimensions {sorted(map(sorted, sets))}, not {sorted(dims)}"]
    out = []
    for key, value in dims.items():
        if value is None:
            continue
        allowed = [v.values[key] for v in matching]
        if all(a is not None and value not in a for a in allowed):
            known = sorted(set().union(*(a for a in allowed if a)))
            out.append(f"{use.where}: {use.name} {key}={value!r} is never emitted (the code sets {known})")
    return out


@pytest.mark.parametrize("reader", sorted(READERS))
def test_application_metrics_read_on_aws_are_emitted(reader):
    namespace = em.emf_namespace()
    uses = [u for u in READERS[reader]() if u.namespace == namespace]
    assert uses, f"{reader}: reads no metric in the EMF namespace {namespace!r}"
    emitted = em.emf_series()
    errors = [p for u in uses for p in problems(u, emitted)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_namespace_is_aws_or_the_emf_one(reader):
    """A misspelt EMF namespace would read nothing, and no other check would notice."""
    namespace = em.emf_namespace()
    uses = READERS[reader]()
    assert uses
    wrong = [f"{u.where}: namespace {u.namespace!r}" for u in uses
             if u.namespace != namespace and not u.namespace.startswith("AWS/")]
    assert not wrong, "\n".join(wrong)


def test_problems_catches_wrong_names_dimensions_and_values():
    """The check itself: each kind of mistake is reported, a correct use is not."""
    emitted = em.emf_series()

    def use(name: str, **dims: str | None) -> MetricUse:
        return MetricUse("t", em.emf_namespace(), name, tuple(sorted(dims.items())))

    assert problems(use("consumer_batches_total", function="stream-consumer", outcome="failed"), emitted) == []
    assert problems(use("consumer_quarantined_total", function="stream-consumer", reason=None), emitted) == []
    bad = [
        use("consumer_batches", function="stream-consumer", outcome="failed"),  # not a registered name
        use("consumer_end_to_end_latency_seconds_bucket", function="stream-consumer"),  # Prometheus only
        use("consumer_batches_total", function="stream-consumer"),  # the outcome dimension is missing
        use("consumer_batches_total", function="stream-consumer", outcome="failure"),  # no such value
        use("consumer_batches_total", function="producer-api", outcome="failed"),  # the other binary
        use("consumer_millis_behind_latest", function="stream-consumer", shard=None),  # local runner only
    ]
    for wrong in bad:
        assert problems(wrong, emitted), wrong


def test_search_expressions_are_parsed():
    expression = ("SEARCH('{WebAnalytics,function,reason} MetricName=\"consumer_quarantined_total\" "
                  "function=\"stream-consumer\"', 'Sum', 300)")
    (use,) = search_uses(expression, "t")
    assert (use.namespace, use.name, use.dimensions) == (
        "WebAnalytics", "consumer_quarantined_total", {"function": "stream-consumer", "reason": None})
    (schemaless,) = search_uses("SEARCH('MetricName=\"x\"', 'Sum', 60)", "t")
    assert schemaless.namespace == ""


def test_dashboards_and_template_are_read():
    """The readers see the panels that exist (so an empty result above cannot pass by accident)."""
    names = {u.name for u in grafana_uses()}
    assert {"IteratorAge", "consumer_end_to_end_latency_seconds", "consumer_quarantined_total"} <= names
    assert {u.name for u in cloudwatch_dashboard_uses()} >= {"consumer_sink_duration_seconds", "FreeStorageSpace"}
    assert (DASHBOARD_DIR / "pipeline-aws-cloudwatch.json").is_file()
