"""The measuring half of `make bench-sustained` (scripts/bench-sustained.sh), issue #21.

  sustained_check.py sample --out FILE [--url URL] [--interval 1]
      every interval, one line `unix_time  max_millis_behind_latest  events_stored_total` from
      the consumer runner's /metrics (nan when it does not answer), until SIGTERM/SIGINT
  sustained_check.py drain --acks FILE --before FILE --out FILE [--timeout 300]
      waits until the consumer has stored, since the `before` scrape, as many events as the k6
      ack log holds distinct acknowledged IDs; writes {"acked", "landed", "drained_at", ...}
  sustained_check.py report DIR
      reads what the script left in DIR and writes DIR/summary.md: PASS/FAIL per criterion
      (exit 1 on any FAIL)

The criteria (each a variable to change it): every accepted event lands (the verifier says OK);
end-to-end p99 <= E2E_P99_S (5); consumer_millis_behind_latest never above MAX_LAG_MS (5000)
once WARMUP_S (30) seconds of load have passed; everything landed within DRAIN_S (5) seconds of
the load's end. Plus the machine's CPU per landed event, from scripts/proc_breakdown.py.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import threading
import time
from pathlib import Path

import proc_breakdown
from pylib import (
    bucket_quantile,
    env_float,
    metric_max,
    metric_sum,
    parse_metrics,
    read_metrics,
    series_delta,
    stop_on_signals,
)

CONSUMER_METRICS = "http://127.0.0.1:9102/metrics"
E2E = "consumer_end_to_end_latency_seconds"
STORED = "consumer_events_stored_total"
LAG = "consumer_millis_behind_latest"
# proc_breakdown's groups that are not the pipeline, its stores or its load: someone else's work.
FOREIGN = ("build", "other", "postgres-other")


def scrape(url: str, timeout: float = 2.0) -> dict | None:
    """Samples of `url`, or None when it does not answer (the runner restarting, or busy)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse_metrics(response.read().decode())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Pure parts (tested in scripts/tests/test_sustained_check.py)


# An ack line of k6's JSON logger: {"level":"info","msg":"{\"ack\":\"<id>\",...}",...}. A pattern
# rather than two JSON parses a line: ten minutes at 5,000 events/s are 3 million lines.
ACK_LINE = re.compile(r'^\{.*"msg":"\{\\"ack\\":\\"([^"\\]+)\\"')


def acked_ids(lines) -> set[str]:
    """The distinct event IDs of a k6 ack log (loadtest/README.md, "Ack log"): JSON lines from
    k6's logger whose `msg` is `{"ack": id, "t": type}`; anything else is skipped."""
    return {m.group(1) for line in lines if (m := ACK_LINE.match(line))}


def parse_lag(text: str) -> list[tuple[float, float, float]]:
    """The sampler's file -> [(unix time, max lag ms, events stored)], nan where unanswered."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and not line.startswith("#"):
            rows.append((float(parts[0]), float(parts[1]), float(parts[2])))
    return rows


def lag_verdict(rows, load_start: float, until: float, warmup_s: float, max_lag_ms: float) -> dict:
    """Worst lag after the warm-up, and the seconds (since the load started) above the bound.
    A scrape that went unanswered after the warm-up is reported, not taken as a pass."""
    after = [(t, lag) for t, lag, _ in rows if load_start + warmup_s <= t <= until]
    answered = [lag for _, lag in after if not math.isnan(lag)]
    over = [round(t - load_start, 1) for t, lag in after if not math.isnan(lag) and lag > max_lag_ms]
    return {
        "samples": len(after),
        "unanswered": len(after) - len(answered),
        "max_ms": max(answered, default=None),
        "seconds_over": over,
        "ok": bool(answered) and not over,
    }


def e2e_verdict(before: dict, after: dict, p99_bound_s: float) -> dict:
    """End-to-end latency over the run from the consumer's histogram (a delta of two scrapes):
    p50 and p99 as the upper bounds of their buckets, and the share of observations at or below
    the bound, which decides the criterion exactly when the bound is a bucket edge (5 s is)."""
    delta = series_delta(before, after)
    count = metric_sum(delta, f"{E2E}_count")
    edge = [v for (n, ls), v in delta.items() if n == f"{E2E}_bucket" and float(dict(ls)["le"]) == p99_bound_s]
    # Not a bucket edge: only the p99's bucket bound says anything.
    within = sum(edge) if edge else math.nan
    p99 = bucket_quantile(delta, E2E, 0.99)
    return {
        "observations": int(count),
        "p50_le_s": bucket_quantile(delta, E2E, 0.50),
        "p99_le_s": p99,
        "share_within": (within / count) if count else None,
        "ok": bool(count) and p99 is not None and p99 <= p99_bound_s,
    }


def fmt_s(v) -> str:
    if v is None:
        return "-"
    return "+Inf" if v == math.inf else f"{v:g} s"


# --------------------------------------------------------------------------------------------
# Commands


def cmd_sample(args: argparse.Namespace) -> int:
    stopped = stop_on_signals()
    with open(args.out, "w") as out:
        out.write("# unix_time max_millis_behind_latest events_stored_total\n")
        next_at = time.time()
        while not stopped():
            now = time.time()
            samples = scrape(args.url, timeout=min(2.0, args.interval))
            if samples is None:
                out.write(f"{now:.3f} nan nan\n")
            else:
                out.write(f"{now:.3f} {metric_max(samples, LAG):.0f} {metric_sum(samples, STORED):.0f}\n")
            out.flush()
            next_at += args.interval
            while not stopped() and time.time() < next_at:
                time.sleep(min(0.1, max(0.0, next_at - time.time())))
    return 0


def first_reaching(series: list[tuple[float, float]], target: float) -> float | None:
    """The first time in [(time, value)] at which value >= target."""
    return next((t for t, v in series if v >= target), None)


def cmd_drain(args: argparse.Namespace) -> int:
    base = metric_sum(read_metrics(args.before), STORED)
    started = time.time()
    # The stored count is polled from now on, while the ack log is read: reading it takes
    # seconds, and the moment everything landed must not wait for it.
    series: list[tuple[float, float]] = []
    acked_box: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set() and time.time() - started < args.timeout:
            samples = scrape(args.url)
            if samples is not None:
                series.append((time.time(), metric_sum(samples, STORED) - base))
                if acked_box and series[-1][1] >= acked_box[0]:
                    return
            done.wait(args.poll)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    acked = len(acked_ids(Path(args.acks).read_text().splitlines()))
    acked_box.append(acked)
    poller.join()
    done.set()
    drained_at = first_reaching(list(series), acked)
    landed = int(series[-1][1]) if series else 0
    result = {"acked": acked, "landed": landed, "drained_at": drained_at, "waited_s": round(time.time() - started, 2)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"drain: {landed:,} of {acked:,} acknowledged events landed"
          + (f" {drained_at - started:.1f} s after the wait began" if drained_at
             else f"; gave up after {args.timeout} s"))
    return 0 if drained_at else 1


def k6_figures(path: Path) -> dict:
    """Requests, their rate, dropped iterations, events acknowledged and request p99 from k6's
    summary JSON (lib/summary.js)."""
    if not path.exists():
        return {}
    m = json.loads(path.read_text()).get("metrics", {})

    def v(name, stat):
        return m.get(name, {}).get("values", {}).get(stat)

    return {
        "requests": v("http_reqs", "count"),
        "request_rate": v("http_reqs", "rate"),
        "dropped_iterations": v("dropped_iterations", "count") or 0,
        "accepted_events": v("accepted_events", "count"),
        "failed_rate": v("http_req_failed", "rate"),
        "http_p99_ms": v("http_req_duration", "p(99)"),
    }


def cmd_report(args: argparse.Namespace) -> int:
    run = Path(args.dir)
    times = json.loads((run / "times.json").read_text())
    drain = json.loads((run / "drain.json").read_text()) if (run / "drain.json").exists() else {}
    warmup, max_lag, drain_bound, p99_bound = (env_float("WARMUP_S", 30), env_float("MAX_LAG_MS", 5000),
                                              env_float("DRAIN_S", 5), env_float("E2E_P99_S", 5))
    load_start, load_end = times["load_start"], times["load_end"]
    drained_at = drain.get("drained_at")
    lag = lag_verdict(parse_lag((run / "lag.tsv").read_text()), load_start, drained_at or load_end, warmup, max_lag)
    e2e = e2e_verdict(read_metrics(run / "metrics-before.consumer"), read_metrics(run / "metrics-after.consumer"),
                      p99_bound)
    drain_s = (drained_at - load_end) if drained_at else None
    verify_ok = times.get("verify_status") == 0
    k6 = k6_figures(run / "sustained-open-summary.json")
    landed = drain.get("landed") or 0
    breakdown = (run / "proc" / "breakdown.md").read_text() if (run / "proc" / "breakdown.md").exists() else ""
    busy = foreign = None
    if (run / "proc" / "samples.jsonl").exists():
        meta, samples, _ = proc_breakdown.load(run / "proc")
        by_group, busy = proc_breakdown.totals(samples)
        wall = sum(s["dt"] for s in samples) or 1.0
        foreign = {g: by_group.get(g, 0.0) / wall for g in FOREIGN if by_group.get(g, 0.0) / wall >= 0.05}
    load_s = load_end - load_start

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    share = e2e["share_within"]
    criteria = [
        ("every accepted event lands (verifier)", verify_ok,
         f"verifier exit {times.get('verify_status')}; {landed:,} of {drain.get('acked', 0):,} acknowledged "
         "events counted by the consumer"),
        (f"end-to-end p99 <= {p99_bound:g} s", e2e["ok"],
         f"p99 in the bucket <= {fmt_s(e2e['p99_le_s'])}, p50 <= {fmt_s(e2e['p50_le_s'])}; "
         + (f"{100 * share:.2f} % of {e2e['observations']:,} samples within {p99_bound:g} s"
            if share is not None and not math.isnan(share) else f"{e2e['observations']:,} samples")),
        (f"millis_behind_latest <= {max_lag:g} ms after {warmup:g} s", lag["ok"],
         f"max {lag['max_ms'] if lag['max_ms'] is not None else '-'} ms over {lag['samples']} samples"
         + (f" ({lag['unanswered']} unanswered)" if lag["unanswered"] else "")
         + (f"; above at t = {', '.join(map(str, lag['seconds_over'][:10]))} s" if lag["seconds_over"] else "")),
        (f"all landed within {drain_bound:g} s of the load's end", drain_s is not None and drain_s <= drain_bound,
         f"{drain_s:.1f} s" if drain_s is not None else f"not all landed after {drain.get('waited_s', '?')} s"),
    ]
    passed = all(ok for _, ok, _ in criteria)
    knobs = times.get("knobs", {})
    lines = [
        f"# Sustained open-model load: {verdict(passed)}",
        "",
        f"{knobs.get('RATE')} requests/s x {knobs.get('EVENTS_PER_REQUEST')} events for {knobs.get('DURATION')} "
        f"({knobs.get('profile')} build), started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(load_start))}; "
        f"load ran {load_s:.1f} s.",
        "",
        "| criterion | result | measured |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {verdict(ok)} | {detail} |" for name, ok, detail in criteria]
    if busy is not None and landed:
        lines += ["", f"**Whole-machine CPU per landed event: {1000 * busy / landed:.3f} ms** "
                  f"({busy:.1f} CPU s busy from the load's start until everything landed, {landed:,} events; "
                  "the breakdown below says how much of it was the pipeline)."]
    if foreign:
        lines += ["", "**Not a quiet machine:** " + ", ".join(f"{g} used {c:.2f} cores" for g, c in foreign.items())
                  + " on average during the recording. They are not the pipeline, but they competed with it for "
                  "the CPUs: latency, lag and the whole-machine CPU per event are those of a shared machine."]
    if k6:
        rate = k6.get("request_rate")
        lines += ["", "k6: " + ", ".join([
            f"{k6.get('requests') or 0:,} requests ({rate:.1f}/s)" if rate else "no requests",
            f"{int(k6.get('dropped_iterations') or 0):,} dropped iterations",
            f"{int(k6.get('accepted_events') or 0):,} events acknowledged",
            f"request p99 {k6['http_p99_ms']:.0f} ms" if k6.get("http_p99_ms") is not None else "no latency",
            f"failed {100 * (k6.get('failed_rate') or 0):.2f} %",
        ]) + "."]
    lines += ["", "End-to-end latency is the consumer's histogram (now - received_at when an event is stored "
              "in every store), over the whole run; a batch records at most 100 of its events' latencies, "
              "evenly spaced over their sorted order, so large batches weigh like small ones.",
              "", "## CPU by process (scripts/proc_breakdown.py)", "", breakdown or "(no breakdown)",
              "Chart: `proc/breakdown.svg`. Lag every second: `lag.tsv`. Verifier: `verify.txt`."]
    text = "\n".join(lines) + "\n"
    (run / "summary.md").write_text(text)
    print(text, end="")
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample", help="record the consumer's lag and stored events every interval")
    s.add_argument("--out", required=True)
    s.add_argument("--url", default=CONSUMER_METRICS)
    s.add_argument("--interval", type=float, default=1.0)
    d = sub.add_parser("drain", help="wait until every acknowledged event is stored")
    d.add_argument("--acks", required=True)
    d.add_argument("--before", required=True, help="a /metrics scrape of the consumer from before the load")
    d.add_argument("--out", required=True)
    d.add_argument("--url", default=CONSUMER_METRICS)
    d.add_argument("--timeout", type=float, default=300.0)
    d.add_argument("--poll", type=float, default=0.2)
    r = sub.add_parser("report", help="PASS/FAIL per criterion into DIR/summary.md")
    r.add_argument("dir")
    args = parser.parse_args(argv)
    return {"sample": cmd_sample, "drain": cmd_drain, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
