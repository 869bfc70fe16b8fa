"""scripts/demo_lake.py: the demo's hours, the per-partition file figures, and the before/after comparison."""

import datetime as dt
import subprocess
import sys
from pathlib import Path

import demo_lake as dl


def test_hours_run_from_the_first_to_the_current_one_across_midnight():
    now = dt.datetime(2024, 5, 2, 0, 59, 59, tzinfo=dt.timezone.utc)
    assert dl.hours_since("2024-05-01T23", now) == ["dt=2024-05-01/hour=23", "dt=2024-05-02/hour=00"]
    assert dl.hours_since("2024-05-02T00", now) == ["dt=2024-05-02/hour=00"]
    assert dl.hours_since("2024-05-02T01", now) == []


def test_partition_figures_count_only_data_files():
    listing = [
        ("events/dt=2024-05-01/hour=10/a.parquet", 100),
        ("events/dt=2024-05-01/hour=10/b.parquet", 300),
        ("events/dt=2024-05-01/hour=10/c.parquet", 200),
        ("events/dt=2024-05-01/hour=10/_SUCCESS", 0),
        ("events/dt=2024-05-01/hour=10/.tmp.parquet", 9999),
        ("events/dt=2024-05-01/hour=11/compacted-1.parquet", 5000),
        ("dead-letter/dt=2024-05-01/hour=10/x.ndjson", 50),
        ("events/README.txt", 10),
    ]
    assert dl.partition_stats(listing) == {
        "dt=2024-05-01/hour=10": {"files": 3, "median_bytes": 200, "total_bytes": 600},
        "dt=2024-05-01/hour=11": {"files": 1, "median_bytes": 5000, "total_bytes": 5000},
    }
    assert dl.partition_stats([]) == {}


def test_tables_show_before_and_after_and_a_partition_that_vanished():
    before = {"dt=2024-05-01/hour=10": {"files": 120, "median_bytes": 10 * 1024}}
    after = {"dt=2024-05-01/hour=10": {"files": 1, "median_bytes": 3 * 1024 * 1024}}
    (line,) = dl.files_table(before, after)
    assert "120 files" in line and "10.0 KiB" in line and "1 files" in line and "3.0 MiB" in line
    assert dl.files_table({}) == ["  (no partitions)"]
    (gone,) = dl.files_table(before, {})
    assert "0 files" in gone


def test_answers_must_be_identical_query_by_query():
    a = {"01": {"columns": ["n"], "rows": [[3]]}, "02": {"columns": ["n"], "rows": [[1]]}}
    assert dl.differing_answers(a, dict(a)) == []
    assert dl.differing_answers(a, {**a, "02": {"columns": ["n"], "rows": [[2]]}}) == ["02"]
    assert dl.differing_answers(a, {"01": a["01"]}) == ["02"]
    sums = {"03": {"columns": ["avg"], "rows": [[0.1 + 0.2, "x"]]}}
    assert dl.differing_answers(sums, {"03": {"columns": ["avg"], "rows": [[0.3, "x"]]}}) == [], "float order"
    assert dl.differing_answers(sums, {"03": {"columns": ["avg"], "rows": [[0.31, "x"]]}}) == ["03"]
    assert dl.differing_answers(sums, {"03": {"columns": ["avg"], "rows": [[0.3, "y"]]}}) == ["03"]


def test_compare_exits_1_when_an_answer_changed(tmp_path: Path):
    same = '{"partitions": {}, "answers": {"01": {"columns": ["n"], "rows": [[3]]}}}'
    other = '{"partitions": {}, "answers": {"01": {"columns": ["n"], "rows": [[4]]}}}'
    (tmp_path / "a.json").write_text(same)
    (tmp_path / "b.json").write_text(same)
    (tmp_path / "c.json").write_text(other)
    script = Path(dl.__file__)
    run = lambda x, y: subprocess.run(  # noqa: E731
        [sys.executable, str(script), "compare", str(tmp_path / x), str(tmp_path / y)], capture_output=True, text=True
    )
    ok = run("a.json", "b.json")
    assert ok.returncode == 0 and "same answers" in ok.stdout
    bad = run("a.json", "c.json")
    assert bad.returncode == 1 and "01" in bad.stdout
