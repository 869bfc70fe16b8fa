"""Every application metric a dashboard reads on AWS is one the code emits.

The list of what the code emits is not kept by hand: emitted_metrics.py parses the Rust
registrations (`metrics::counter!` / `gauge!` / `histogram!`) and derives the EMF names and
dimension sets from how service-kit's recorder publishes them. The readers checked here are the
Grafana dashboards (grafana/dashboards/*.json) and the CloudWatch dashboard body
(terraform/templates/cloudwatch-dashboard.json.tftpl); terraform/tests/test_alarms.py holds every
aws_cloudwatch_metric_alarm to the same emitted_metrics.problems(). A reader of a metric nobody
emits shows "no data", which on AWS looks the same as a healthy pipeline.
"""

from __future__ import annotations

import json
import re

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

CLOUDWATCH_TEMPLATE = REPO_ROOT / "terraform" / "templates" / "cloudwatch-dashboard.json.tftpl"

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


def grafana_uses() -> list[MetricUse]:
    return [u for name, d in load_dashboards().items() for u in grafana_cloudwatch_uses(d, name)]


def cloudwatch_dashboard_uses() -> list[MetricUse]:
    return cloudwatch_body_uses(json.loads(CLOUDWATCH_TEMPLATE.read_text()), CLOUDWATCH_TEMPLATE.name)


READERS = {"grafana": grafana_uses, "cloudwatch-dashboard": cloudwatch_dashboard_uses}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_metrics_read_on_aws_are_emitted(reader):
    uses = READERS[reader]()
    namespace = em.emf_namespace()
    assert any(u.namespace == namespace for u in uses), f"{reader}: reads no metric in the EMF namespace {namespace!r}"
    errors = em.problems(uses)
    assert not errors, "\n".join(errors)


def test_problems_catches_wrong_names_dimensions_and_values():
    """The check itself: each kind of mistake is reported, a correct use is not."""

    def use(name: str, namespace: str | None = None, **dims: str | None) -> MetricUse:
        return MetricUse("t", namespace or em.emf_namespace(), name, tuple(sorted(dims.items())))

    good = [
        use("consumer_batches_total", function="stream-consumer", outcome="failed"),
        use("consumer_quarantined_total", function="stream-consumer", reason=None),
        use("IteratorAge", "AWS/Lambda", FunctionName=None),
    ]
    assert em.problems(good) == []
    bad = [
        use("consumer_batches", function="stream-consumer", outcome="failed"),  # not a registered name
        use("consumer_end_to_end_latency_seconds_bucket", function="stream-consumer"),  # Prometheus only
        use("consumer_batches_total", function="stream-consumer"),  # the outcome dimension is missing
        use("consumer_batches_total", function="stream-consumer", outcome="failure"),  # no such value
        use("consumer_batches_total", function="producer-api", outcome="failed"),  # the other binary
        use("consumer_millis_behind_latest", function="stream-consumer", shard=None),  # local runner only
        use("consumer_batches_total", em.emf_namespace().lower(), function="stream-consumer", outcome="failed"),
    ]
    for wrong in bad:
        assert len(em.problems([wrong])) == 1, wrong


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
