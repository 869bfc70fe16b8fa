"""scripts/sustained_check.py: the ack log, the lag file and the verdicts of `make bench-sustained`."""

import json
import math

import sustained_check as sc

ACK = '{"level":"info","msg":"{\\"ack\\":\\"%s\\",\\"t\\":\\"page_view\\"}","time":"2026-11-28T06:41:46Z"}'


def test_acked_ids_are_distinct_and_only_ack_lines_count():
    lines = [
        ACK % "a",
        ACK % "b",
        ACK % "a",  # acknowledged twice: one event to land
        '{"level":"warn","msg":"Request Failed","time":"2026-11-28T06:41:47Z"}',
        "time=\"2026-11-28T06:40:00Z\" level=info msg=\"not json\"",
        "{broken",
        "",
    ]
    assert sc.acked_ids(lines) == {"a", "b"}


def test_lag_file_rows_keep_unanswered_scrapes_as_nan():
    rows = sc.parse_lag("# header\n100.0 0 10\n101.0 nan nan\n102.5 7000 20\n")
    assert rows[0] == (100.0, 0.0, 10.0) and rows[2] == (102.5, 7000.0, 20.0)
    assert math.isnan(rows[1][1])


def test_lag_verdict_ignores_the_warm_up_and_names_the_seconds_over():
    rows = [(1000.0 + t, lag, 0.0) for t, lag in [(0, 0), (10, 9000), (31, 100), (40, 6000), (41, 5000), (99, 9000)]]
    v = sc.lag_verdict(rows, load_start=1000.0, until=1050.0, warmup_s=30, max_lag_ms=5000)
    assert v["samples"] == 3, "before the warm-up and after the end do not count"
    assert (v["max_ms"], v["seconds_over"], v["ok"]) == (6000.0, [40.0], False)
    assert sc.lag_verdict(rows[:3], 1000.0, 1050.0, 30, 5000)["ok"]


def test_lag_verdict_without_any_answer_is_not_a_pass():
    rows = [(1040.0, math.nan, math.nan)]
    v = sc.lag_verdict(rows, 1000.0, 1050.0, 30, 5000)
    assert (v["unanswered"], v["max_ms"], v["ok"]) == (1, None, False)


def histogram(counts: dict[str, float]) -> dict:
    """Samples of consumer_end_to_end_latency_seconds with cumulative bucket counts."""
    samples = {("consumer_end_to_end_latency_seconds_bucket", frozenset({("le", le)})): n for le, n in counts.items()}
    samples[("consumer_end_to_end_latency_seconds_count", frozenset())] = counts["+Inf"]
    return samples


def test_e2e_verdict_is_over_the_run_and_decided_at_the_5_s_edge():
    before = histogram({"1.0": 50, "3.0": 50, "5.0": 50, "10.0": 50, "+Inf": 50})
    # 1,000 observations in the run: 985 within 3 s, 995 within 5 s, 1,000 within 10 s.
    after = histogram({"1.0": 550, "3.0": 1035, "5.0": 1045, "10.0": 1050, "+Inf": 1050})
    v = sc.e2e_verdict(before, after, 5.0)
    assert v["observations"] == 1000
    assert (v["p50_le_s"], v["p99_le_s"]) == (1.0, 5.0)
    assert v["share_within"] == 0.995 and v["ok"]
    worse = histogram({"1.0": 550, "3.0": 1000, "5.0": 1030, "10.0": 1050, "+Inf": 1050})
    v = sc.e2e_verdict(before, worse, 5.0)
    assert (v["p99_le_s"], v["share_within"], v["ok"]) == (10.0, 0.98, False)


def test_e2e_verdict_without_observations_fails():
    empty = histogram({"5.0": 0, "+Inf": 0})
    assert sc.e2e_verdict(empty, empty, 5.0)["ok"] is False


def test_report_writes_the_verdict_per_criterion(tmp_path, monkeypatch):
    monkeypatch.delenv("WARMUP_S", raising=False)
    start = 1000.0
    (tmp_path / "times.json").write_text(json.dumps({
        "load_start": start, "load_end": start + 60, "verify_status": 0,
        "knobs": {"RATE": "20", "EVENTS_PER_REQUEST": "50", "DURATION": "60s", "profile": "release"},
    }))
    (tmp_path / "drain.json").write_text(json.dumps({"acked": 60000, "landed": 60000, "drained_at": start + 62}))
    (tmp_path / "lag.tsv").write_text("".join(f"{start + t} {200 if t > 5 else 9000} 0\n" for t in range(0, 63)))
    text = "\n".join(f'{n}{{le="{le}"}} {c}' for n, le, c in [
        ("consumer_end_to_end_latency_seconds_bucket", "1", 990), ("consumer_end_to_end_latency_seconds_bucket", "5", 1000),
        ("consumer_end_to_end_latency_seconds_bucket", "+Inf", 1000)])
    head = "# TYPE consumer_end_to_end_latency_seconds histogram\n"
    tail = "\nconsumer_end_to_end_latency_seconds_sum 300\nconsumer_end_to_end_latency_seconds_count 1000\n"
    (tmp_path / "metrics-before.consumer").write_text(head + text.replace(" 990", " 0").replace(" 1000", " 0")
                                                      + tail.replace("300", "0").replace("1000", "0"))
    (tmp_path / "metrics-after.consumer").write_text(head + text + tail)
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "breakdown.md").write_text("| **whole machine (busy)** | 90.0 | 75.0 % | 1.50 | 1.500 |\n")
    (proc / "meta.json").write_text(json.dumps({"cpus": 2, "interval_s": 1.0, "wall_s": 60.0}))
    (proc / "processes.json").write_text("[]")
    # 60 s: 1.5 cores busy, of which the consumer 1.0 and someone's build 0.25.
    (proc / "samples.jsonl").write_text("".join(
        json.dumps({"t": t + 1.0, "dt": 1.0, "busy": 1.5, "groups": {"consumer": 1.0, "build": 0.25}}) + "\n"
        for t in range(60)))
    assert sc.main(["report", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# Sustained open-model load: PASS")
    assert "| all landed within 5 s of the load's end | PASS | 2.0 s |" in summary
    assert "Whole-machine CPU per landed event: 1.500 ms" in summary
    assert "**Not a quiet machine:** build used 0.25 cores" in summary

    (tmp_path / "drain.json").write_text(json.dumps({"acked": 60000, "landed": 59000, "drained_at": None,
                                                     "waited_s": 300}))
    assert sc.main(["report", str(tmp_path)]) == 1
    assert "| all landed within 5 s of the load's end | FAIL | not all landed after 300 s |" in (
        tmp_path / "summary.md").read_text()


def test_drain_finds_when_the_stored_count_reached_the_acknowledged_events(tmp_path):
    import http.server
    import threading

    served = {"n": 0}

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            served["n"] += 1  # one more event stored per scrape
            body = f"# TYPE consumer_events_stored_total counter\nconsumer_events_stored_total {10 + served['n']}\n"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "acks").write_text("".join(ACK % i + "\n" for i in "abc"))
        (tmp_path / "before").write_text("# TYPE consumer_events_stored_total counter\nconsumer_events_stored_total 10\n")
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        status = sc.main(["drain", "--acks", str(tmp_path / "acks"), "--before", str(tmp_path / "before"),
                          "--out", str(tmp_path / "drain.json"), "--url", url, "--poll", "0.01", "--timeout", "10"])
    finally:
        server.shutdown()
    result = json.loads((tmp_path / "drain.json").read_text())
    assert status == 0
    assert result["acked"] == 3 and result["landed"] >= 3 and result["drained_at"] is not None


def test_first_reaching():
    assert sc.first_reaching([(1.0, 0), (2.0, 5), (3.0, 9)], 5) == 2.0
    assert sc.first_reaching([(1.0, 0)], 5) is None
