"""Writes the "Measured" section of bench/RESULTS.md from a `make bench` run's outputs."""

import argparse
import json
import platform
import re
import subprocess
from pathlib import Path

from pylib import ROOT, bucket_quantile, metric_sum, read_metrics, series_delta

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def delta(before, after, name, **want):
    """How much the counter `name` (label sets including `want`, added up) grew between the scrapes."""
    return metric_sum(series_delta(before, after), name, **want)


def quantile(before, after, name, q):
    """Upper bound of the bucket of histogram `name` holding its q-quantile between the scrapes."""
    return bucket_quantile(series_delta(before, after), name, q)


def criterion(path):
    rows = []
    name = None
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^(\S+/\S+)\s*(time:.*)?$", line.strip())
        if m and "/" in m.group(1) and not line.strip().startswith(("time", "thrpt", "change", "Found")):
            name = m.group(1)
        t = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if t and name:
            rows.append([name, f"{t.group(1)} {t.group(2)}", ""])
        th = re.search(r"thrpt:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if th and rows:
            rows[-1][2] = f"{th.group(1)} {th.group(2)}"
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--k6-status", type=int, default=0)
    ap.add_argument("--verify-status", type=int, default=0)
    ap.add_argument("--latency-k6-status", type=int, default=0)
    ap.add_argument("--latency-verify-status", type=int, default=0)
    a = ap.parse_args()
    out = ROOT / a.out
    before = {**read_metrics(out / "metrics-before.producer"), **read_metrics(out / "metrics-before.consumer")}
    after = {**read_metrics(out / "metrics-after.producer"), **read_metrics(out / "metrics-after.consumer")}
    stored = delta(before, after, "consumer_events_stored_total")
    calls = {
        "Kinesis PutRecords (producer)": delta(before, after, "producer_put_records_calls_total"),
        "S3 PutObject/HeadObject": delta(before, after, "consumer_sink_requests_total", sink="s3"),
        "DynamoDB BatchWriteItem": delta(before, after, "consumer_sink_requests_total", sink="dynamodb"),
        "PostgreSQL transactions": delta(before, after, "consumer_sink_requests_total", sink="postgres"),
        "Kinesis GetRecords etc. (local runner; the event source mapping on AWS)": delta(
            before, after, "consumer_kinesis_requests_total"),
    }
    s = json.loads((out / "sustained-summary.json").read_text())
    m = s["metrics"]
    v = lambda n, k="count": m.get(n, {}).get("values", {}).get(k, 0)
    secs = s["state"]["testRunDurationMs"] / 1000
    accepted = v("accepted_events")
    e2e_p99 = quantile(before, after, "consumer_end_to_end_latency_seconds", 0.99)
    e2e_p50 = quantile(before, after, "consumer_end_to_end_latency_seconds", 0.50)
    lat = out / "latency"
    lat_before, lat_after = read_metrics(lat / "metrics-before.consumer"), read_metrics(lat / "metrics-after.consumer")
    lat_p50 = quantile(lat_before, lat_after, "consumer_end_to_end_latency_seconds", 0.50)
    lat_p99 = quantile(lat_before, lat_after, "consumer_end_to_end_latency_seconds", 0.99)
    lat_stored = delta(lat_before, lat_after, "consumer_events_stored_total")
    ls = json.loads((lat / "sustained-summary.json").read_text())
    lat_secs = ls["state"]["testRunDurationMs"] / 1000
    lat_accepted = ls["metrics"].get("accepted_events", {}).get("values", {}).get("count", 0)
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"], capture_output=True, text=True).stdout.strip()
    mem = (out / "batch-memory.txt").read_text().strip()
    verify_tail = "\n".join((out / "bench-verify.txt").read_text().splitlines()[-12:])

    lines = [START, "## Measured (`make bench`)", ""]
    lines += [f"Machine: {cpu or platform.processor()}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
              f"{platform.system()} {platform.release()}; every emulator, PostgreSQL, k6 and both binaries share it.", ""]
    lines += ["### CPU paths (criterion, release)", "", "| benchmark | time (median) | throughput |", "|---|---|---|"]
    for f in ("criterion-producer.txt", "criterion-consumer.txt"):
        for name, t, th in criterion(out / f):
            lines.append(f"| `{name}` | {t} | {th} |")
    lines += ["", "### Consumer memory, one 10,000-record batch", "", f"`{mem}`", ""]
    lines += ["### Sustained load through the local pipeline (k6 `sustained.js`, release binaries)", ""]
    total_calls = sum(calls.values())
    aws_calls = total_calls - calls["Kinesis GetRecords etc. (local runner; the event source mapping on AWS)"]
    lines += [
        f"- k6: {v('http_reqs'):.0f} requests in {secs:.0f} s ({v('http_reqs', 'rate'):.0f}/s), "
        f"{accepted:.0f} events accepted ({accepted / secs:.0f} events/s), {v('rejected_events'):.0f} rejected on purpose, "
        f"{v('throttled_requests'):.0f} throttled; HTTP p95 {v('http_req_duration', 'p(95)'):.0f} ms, p99 {v('http_req_duration', 'p(99)'):.0f} ms; "
        f"k6 thresholds {'passed' if a.k6_status == 0 else 'FAILED (exit %d)' % a.k6_status}.",
        f"- Verifier: {'OK — nothing lost, nothing double-counted' if a.verify_status == 0 else 'FAILED'}.",
        f"- End-to-end latency under this load (API `received_at` → batch stored in all three stores, an upper "
        f"bound of visibility in PostgreSQL, which commits first): p50 ≤ {e2e_p50} s, p99 ≤ {e2e_p99} s "
        f"(histogram bucket bounds).",
        f"- **At ~1,000 events/s** (second k6 run, {lat_accepted:.0f} events accepted in {lat_secs:.0f} s = "
        f"{lat_accepted / max(lat_secs, 1):.0f} events/s, {lat_stored:.0f} stored): end-to-end latency "
        f"**p50 ≤ {lat_p50} s, p99 ≤ {lat_p99} s**; k6 thresholds "
        f"{'passed' if a.latency_k6_status == 0 else 'FAILED (exit %d)' % a.latency_k6_status}, verifier "
        f"{'OK' if a.latency_verify_status == 0 else 'FAILED'}.",
        f"- Backend requests: {total_calls:.0f} for {stored:.0f} stored events = "
        f"**{1000 * total_calls / max(stored, 1):.1f} per 1,000 events** locally; "
        f"{1000 * aws_calls / max(stored, 1):.1f} per 1,000 without the runner's polling (what the Lambda pays on AWS).",
        "",
        "| backend call | count | per 1,000 events |",
        "|---|---|---|",
    ]
    for k, c in calls.items():
        lines.append(f"| {k} | {c:.0f} | {1000 * c / max(stored, 1):.1f} |")
    lines += ["", "Verifier output (tail):", "", "```", verify_tail, "```", "",
              "Reproduce: `make bench` (`BENCH_RATE`, `BENCH_DURATION` to change the load). The k6 HTML report is "
              "`bench/out/sustained-report.html`.", END]
    block = "\n".join(lines)

    results = ROOT / "bench" / "RESULTS.md"
    text = results.read_text() if results.exists() else "# Benchmark results\n\n"
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    results.write_text(text)


if __name__ == "__main__":
    main()
