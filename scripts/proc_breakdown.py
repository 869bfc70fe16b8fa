#!/usr/bin/env python3
"""Where the machine's CPU went during a run, per process of the local stack, from /proc.

  proc_breakdown.py record --out DIR [--interval 1] -- COMMAND...   sample while COMMAND runs
  proc_breakdown.py record --out DIR [--interval 1] --pid-file F    sample until SIGTERM/SIGINT
  proc_breakdown.py stop --pid-file F                               end the recording above
  proc_breakdown.py report DIR [--events N]                         DIR/breakdown.md, DIR/breakdown.svg

Every interval it reads /proc/stat (the machine's busy time) and /proc/<pid>/stat (utime + stime,
all threads) of every process, and files each process under a group by its command line
(`classify`): the pipeline (producer, consumer), the emulators (kinesalite, dynalite, moto),
postgres (the server's processes and every backend of the pipeline's database, summed; backends
of other databases are postgres-other), k6, the verifier, the harness itself, builds (cargo, rustc
and the test and bench binaries cargo runs: another engineer's work on a shared machine), the
kernel's threads, and other. What a process
spends between its last sample and its exit, and interrupt time, is not charged to any process:
it is the report's "unattributed" row (busy time minus the processes' sum), so nothing is hidden.

`record` writes DIR/meta.json, DIR/samples.jsonl (CPU seconds per group per interval) and
DIR/processes.json (CPU seconds per process); `report` turns them into a markdown table (CPU
seconds, % of the machine, CPU ms per landed event with --events) and a stacked SVG chart of
the cores each group used over time. Standard library only: no plotting package in the venv.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path

import pylib

# Groups in the order of the table and of the chart's stack (bottom first).
GROUPS = [
    "producer",
    "consumer",
    "kinesalite",
    "dynalite",
    "moto",
    "postgres",
    "postgres-other",
    "k6",
    "verify",
    "harness",
    "build",
    "kernel",
    "other",
]
UNATTRIBUTED = "unattributed"
# Fill colours of the chart, one per group (and a grey for unattributed).
COLOURS = {
    "producer": "#1f77b4",
    "consumer": "#ff7f0e",
    "kinesalite": "#2ca02c",
    "dynalite": "#98df8a",
    "moto": "#9467bd",
    "postgres": "#d62728",
    "postgres-other": "#ff9896",
    "k6": "#8c564b",
    "verify": "#e377c2",
    "harness": "#bcbd22",
    "build": "#7f7f7f",
    "kernel": "#17becf",
    "other": "#c7c7c7",
    UNATTRIBUTED: "#eeeeee",
}


# --------------------------------------------------------------------------------------------
# /proc parsing (pure: text in, values out)


@dataclass(frozen=True)
class ProcStat:
    comm: str
    ppid: int
    ticks: int  # utime + stime, clock ticks
    start: int  # starttime, clock ticks since boot


def parse_pid_stat(text: str) -> ProcStat:
    """/proc/<pid>/stat -> its name, parent, CPU ticks and start time. The name (field 2) is in
    parentheses and may hold spaces and parentheses itself, so the fields after it are split
    from the last ')'."""
    open_paren, close_paren = text.index("("), text.rindex(")")
    comm = text[open_paren + 1 : close_paren]
    rest = text[close_paren + 2 :].split()
    # rest[0] is field 3 (state): utime and stime are fields 14 and 15, starttime field 22.
    return ProcStat(comm=comm, ppid=int(rest[1]), ticks=int(rest[11]) + int(rest[12]), start=int(rest[19]))


def parse_machine_stat(text: str) -> tuple[int, int]:
    """/proc/stat -> (busy ticks, total ticks) of all CPUs together. Busy is everything but
    idle and iowait; guest time is already inside user time, so it is not added again."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:9]]  # user nice system idle iowait irq softirq steal
            total = sum(values)
            return total - values[3] - values[4], total
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def postgres_database(title: str) -> str | None:
    """The database of a PostgreSQL backend from the title it gives itself,
    `postgres: [cluster: ]user database host activity` (host `[local]` or `addr(port)`); None for
    the server's own processes (checkpointer, walwriter, ...), which serve every database."""
    words = title.removeprefix("postgres:").split()
    if words and words[0].endswith(":"):  # Debian's cluster name, "15/main:"
        words = words[1:]
    if len(words) >= 3 and (words[2] == "[local]" or words[2].endswith(")")):
        return words[1]
    return None


def classify(cmdline: list[str], comm: str, ppid: int, database: str = "analytics") -> str:
    """The group of a process, from its command line (argv), its name and its parent. The
    markers are the ones scripts/local-stack.sh and scripts/pipeline.sh start them with.
    PostgreSQL backends of another database than the pipeline's are `postgres-other`: on a
    shared server they are someone else's work."""
    if not cmdline:
        # Kernel threads (kthreadd, pid 2, and its children) have no command line; nor has a
        # zombie, whose last ticks are still its own.
        return "kernel" if ppid in (0, 2) else "other"
    exe = os.path.basename(cmdline[0])
    words = " ".join(cmdline)
    if exe == "producer-api":
        return "producer"
    if exe == "stream-consumer":
        return "consumer"
    if "kinesalite" in words:
        return "kinesalite"
    if "dynalite" in words:
        return "dynalite"
    if "moto_server" in words:
        return "moto"
    # The postmaster runs as .../bin/postgres; its backends rename themselves "postgres: ...".
    if exe == "postgres" or words.startswith("postgres:") or comm == "postgres":
        db = postgres_database(words) if words.startswith("postgres:") else None
        return "postgres" if db in (None, database) else "postgres-other"
    if exe == "k6":
        return "k6"
    if exe == "verify":
        return "verify"
    # Compilers, and test and bench binaries cargo runs from target/<profile>/deps/.
    if (exe in ("cargo", "rustc", "cc", "ld", "clippy-driver", "rustdoc") or exe.startswith(("cargo-", "rustc"))
            or "/deps/" in cmdline[0]):
        return "build"
    harness = ("proc_breakdown.py", "bench-sustained.sh", "sustained_check.py", "k6.sh", "pipeline.sh")
    if exe in ("curl", "psql") or any(h in words for h in harness):
        return "harness"
    return "other"


def read_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


# --------------------------------------------------------------------------------------------
# Recording


class Recorder:
    """Samples /proc and keeps, per process (pid, start time), the ticks charged so far."""

    def __init__(self, out: Path, interval: float, database: str = "analytics") -> None:
        self.out = out
        self.interval = interval
        self.database = database
        self.hz = os.sysconf("SC_CLK_TCK")
        self.cpus = os.cpu_count() or 1
        self.started = time.monotonic()
        self.started_wall = time.time()
        # Ticks since boot when the recording began: a process started later is charged all of
        # its ticks, one running before only those after its first sample.
        self.boot_ticks = int(float(Path("/proc/uptime").read_text().split()[0]) * self.hz)
        self.seen: dict[tuple[int, int], dict] = {}  # (pid, start) -> {group, cmd, base, last}
        self.machine = parse_machine_stat(Path("/proc/stat").read_text())
        self.last_t = self.started
        self.samples = (out / "samples.jsonl").open("w")
        self.sample(first=True)

    def sample(self, first: bool = False) -> None:
        now = time.monotonic()
        by_group: dict[str, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                stat = parse_pid_stat(Path(f"/proc/{pid}/stat").read_text())
            except (OSError, ValueError, IndexError):
                continue  # exited while we looked
            key = (pid, stat.start)
            proc = self.seen.get(key)
            if proc is None:
                group = classify(read_cmdline(pid), stat.comm, stat.ppid, self.database)
                base = stat.ticks if first or stat.start < self.boot_ticks else 0
                cmd = " ".join(" ".join(read_cmdline(pid)).split())[:160] or f"[{stat.comm}]"
                proc = self.seen[key] = {"pid": pid, "group": group, "cmd": cmd, "base": base, "last": base}
            delta = stat.ticks - proc["last"]
            proc["last"] = stat.ticks
            if delta > 0:
                by_group[proc["group"]] = by_group.get(proc["group"], 0) + delta
        busy, total = parse_machine_stat(Path("/proc/stat").read_text())
        busy_delta = busy - self.machine[0]
        self.machine = (busy, total)
        if not first:
            row = {
                "t": round(now - self.started, 3),
                "dt": round(now - self.last_t, 3),
                "busy": busy_delta / self.hz,
                "groups": {g: n / self.hz for g, n in sorted(by_group.items())},
            }
            self.samples.write(json.dumps(row) + "\n")
            self.samples.flush()
        self.last_t = now

    def finish(self, command: list[str] | None, status: int | None) -> None:
        self.sample()
        self.samples.close()
        processes = sorted(
            ({"pid": p["pid"], "group": p["group"], "cmd": p["cmd"], "cpu_s": (p["last"] - p["base"]) / self.hz}
             for p in self.seen.values() if p["last"] > p["base"]),
            key=lambda p: -p["cpu_s"],
        )
        (self.out / "processes.json").write_text(json.dumps(processes, indent=1) + "\n")
        meta = {
            "cpus": self.cpus,
            "clk_tck": self.hz,
            "interval_s": self.interval,
            "started_at": self.started_wall,
            "wall_s": round(time.monotonic() - self.started, 3),
            "command": command,
            "exit_status": status,
        }
        (self.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def cmd_record(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command and not args.pid_file:
        sys.exit("record: give a command after --, or --pid-file to record until stopped")
    stopped = pylib.stop_on_signals()
    recorder = Recorder(out, args.interval, args.database)
    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")
    child = subprocess.Popen(command) if command else None
    status = None
    next_at = time.monotonic() + args.interval
    while not stopped():
        if child is not None and (status := child.poll()) is not None:
            break
        time.sleep(max(0.0, min(0.1, next_at - time.monotonic())))
        if time.monotonic() >= next_at:
            recorder.sample()
            next_at += args.interval
    if child is not None and status is None:
        child.terminate()
        status = child.wait()
    recorder.finish(command or None, status)
    if args.pid_file:
        Path(args.pid_file).unlink(missing_ok=True)
    return status or 0


def cmd_stop(args: argparse.Namespace) -> int:
    path = Path(args.pid_file)
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        print(f"stop: no recording running ({path} missing)", file=sys.stderr)
        return 1
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if path.exists():
        print(f"stop: recorder {pid} did not finish in {args.timeout} s", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# Report


def load(run: Path) -> tuple[dict, list[dict], list[dict]]:
    meta = json.loads((run / "meta.json").read_text())
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines() if line.strip()]
    processes = json.loads((run / "processes.json").read_text())
    return meta, samples, processes


def totals(samples: list[dict]) -> tuple[dict[str, float], float]:
    """CPU seconds per group (plus unattributed) and the machine's busy seconds."""
    by_group: dict[str, float] = {}
    busy = 0.0
    for s in samples:
        busy += s["busy"]
        for g, v in s["groups"].items():
            by_group[g] = by_group.get(g, 0.0) + v
    by_group[UNATTRIBUTED] = max(0.0, busy - sum(by_group.values()))
    return by_group, busy


def table(meta: dict, samples: list[dict], processes: list[dict], events: int | None) -> str:
    by_group, busy = totals(samples)
    wall = sum(s["dt"] for s in samples) or meta["wall_s"]
    capacity = meta["cpus"] * wall
    per_event = events is not None and events > 0

    def row(name: str, seconds: float) -> str:
        cells = [name, f"{seconds:.1f}", f"{100 * seconds / capacity:.1f} %" if capacity else "-",
                 f"{seconds / wall:.2f}" if wall else "-"]
        if per_event:
            cells.append(f"{1000 * seconds / events:.3f}")
        return "| " + " | ".join(cells) + " |"

    head = ["process", "CPU s", "% of machine", "cores (mean)"] + (["CPU ms / landed event"] if per_event else [])
    lines = [
        f"{meta['cpus']} CPUs, {wall:.1f} s sampled every {meta['interval_s']} s"
        + (f", {events:,} events landed" if per_event else "") + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    order = [g for g in GROUPS + [UNATTRIBUTED] if by_group.get(g, 0.0) > 0]
    lines += [row(g, by_group[g]) for g in sorted(order, key=lambda g: -by_group[g])]
    stack = sum(by_group.get(g, 0.0) for g in ("producer", "consumer", "kinesalite", "dynalite", "moto", "postgres"))
    lines.append(row("**pipeline + emulators + postgres**", stack))
    lines.append(row("**whole machine (busy)**", busy))
    lines += ["", "Busiest processes:", "", "| pid | group | CPU s | command |", "|---|---|---|---|"]
    for p in processes[:12]:
        lines.append(f"| {p['pid']} | {p['group']} | {p['cpu_s']:.1f} | `{p['cmd'][:90].replace('|', '/')}` |")
    lines += ["", "`unattributed`: busy time no sampled process accounts for (processes that exited "
              "between two samples, interrupts). `build` and `other` are not the pipeline: another "
              "engineer's builds, or anything else running on the machine, inflate the whole-machine "
              "figure."]
    return "\n".join(lines) + "\n"


def svg_chart(meta: dict, samples: list[dict], title: str = "CPU cores used per process group") -> str:
    """A stacked area chart (SVG, no dependencies) of the cores each group used, sample by sample,
    under a line for the machine's CPU count."""
    width, height, left, right, top, bottom = 900, 420, 60, 170, 36, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    cpus = meta["cpus"]
    end = max((s["t"] for s in samples), default=1.0) or 1.0
    peak = max([cpus] + [s["busy"] / s["dt"] for s in samples if s["dt"] > 0])
    y_max = max(1.0, float(int(peak + 0.999)))

    def x(t: float) -> float:
        return left + plot_w * t / end

    def y(cores: float) -> float:
        return top + plot_h * (1 - cores / y_max)

    # Cores per group per sample (unattributed on top), then cumulative for the stack.
    keys = [g for g in GROUPS if any(s["groups"].get(g) for s in samples)] + [UNATTRIBUTED]
    rows = []
    for s in samples:
        dt = s["dt"] or 1.0
        cores = {g: s["groups"].get(g, 0.0) / dt for g in GROUPS}
        cores[UNATTRIBUTED] = max(0.0, s["busy"] / dt - sum(cores.values()))
        rows.append((s["t"], cores))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14">{escape(title)}</text>']
    for i in range(int(y_max) + 1):  # horizontal grid, one line per core
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(i):.1f}" y2="{y(i):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{y(i) + 4:.1f}" text-anchor="end">{i}</text>')
    step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600) if end / s <= 12), 1800)
    t = 0.0
    while t <= end + 1e-9:
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#333"/>')
        out.append(f'<text x="{x(t):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{t:g}</text>')
        t += step
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">seconds</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" '
               f'text-anchor="middle">cores</text>')
    below = [0.0] * len(rows)
    for g in keys:
        above = [b + cores[g] for b, (_, cores) in zip(below, rows)]
        if rows:
            # Each sample covers (t - dt, t]: draw it as a step so areas equal CPU seconds.
            top_pts, bottom_pts = [], []
            for (t1, _), s, a, b in zip(rows, samples, above, below):
                t0 = max(0.0, t1 - s["dt"])
                top_pts += [(x(t0), y(a)), (x(t1), y(a))]
                bottom_pts += [(x(t0), y(b)), (x(t1), y(b))]
            pts = top_pts + bottom_pts[::-1]
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            out.append(f'<polygon points="{path}" fill="{COLOURS[g]}" stroke="none"><title>{g}</title></polygon>')
        below = above
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(cpus):.1f}" y2="{y(cpus):.1f}" '
               f'stroke="black" stroke-dasharray="6 4"/>')
    out.append(f'<text x="{left + plot_w - 4}" y="{y(cpus) - 4:.1f}" text-anchor="end">{cpus} CPUs</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    for i, g in enumerate(reversed(keys)):  # legend, top of the stack first
        ly = top + 10 + i * 18
        out.append(f'<rect x="{left + plot_w + 14}" y="{ly - 10}" width="12" height="12" fill="{COLOURS[g]}" stroke="#999"/>')
        out.append(f'<text x="{left + plot_w + 32}" y="{ly}">{escape(g)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def cmd_report(args: argparse.Namespace) -> int:
    run = Path(args.dir)
    meta, samples, processes = load(run)
    if not samples:
        sys.exit(f"report: {run} holds no samples (the recording was shorter than one interval)")
    text = table(meta, samples, processes, args.events)
    (run / "breakdown.md").write_text(text)
    (run / "breakdown.svg").write_text(svg_chart(meta, samples))
    print(text, end="")
    print(f"(chart: {run / 'breakdown.svg'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="sample /proc while a command runs, or until stopped")
    rec.add_argument("--out", required=True, help="directory for the samples")
    rec.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    rec.add_argument("--pid-file", help="write this process's pid here; record until SIGTERM (see stop)")
    rec.add_argument("--database", default="analytics",
                     help="the pipeline's PostgreSQL database; backends of others are postgres-other")
    rec.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND... to run and sample")
    stop = sub.add_parser("stop", help="end a recording started with --pid-file")
    stop.add_argument("--pid-file", required=True)
    stop.add_argument("--timeout", type=float, default=30.0)
    rep = sub.add_parser("report", help="markdown table and SVG chart of a recording")
    rep.add_argument("dir")
    rep.add_argument("--events", type=int, help="events landed during the recording (adds CPU ms per event)")
    args = parser.parse_args(argv)
    return {"record": cmd_record, "stop": cmd_stop, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
