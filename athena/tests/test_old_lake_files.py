"""Lake files from before the `site` column (18 columns, fixtures/events-before-site.parquet)
and after it (19) are read as one table: the old rows' `site` is NULL, the new rows keep theirs.
This is DuckDB through athena/run_queries.py's `events` view (what lake-tools/tests/athena_queries.rs
runs the queries on); Athena matches Parquet columns by name the same way."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

duckdb = pytest.importorskip("duckdb")

ATHENA = Path(__file__).resolve().parents[1]
ROOT = ATHENA.parent
sys.path.insert(0, str(ATHENA))

import run_queries  # noqa: E402

OLD_FILE = ATHENA / "tests" / "fixtures" / "events-before-site.parquet"


# The columns added after the fixture was written, in order; older files read them as NULL.
ADDED = ["site", "original_occurred_at", "sent_at", "plan_violations", "country"]


def test_old_files_read_site_as_null_next_to_new_files(tmp_path: Path):
    columns = json.loads((ROOT / "schemas" / "lake_columns.json").read_text())["columns"]
    names = [c["name"] for c in columns]
    assert names[-len(ADDED):] == ADDED, "columns are only ever added at the end"
    old_columns = [r[0] for r in duckdb.sql(f"DESCRIBE SELECT * FROM '{OLD_FILE}'").fetchall()]
    assert old_columns == names[: -len(ADDED)], "the fixture has the lake columns from before sites"

    hour = tmp_path / "events" / "dt=2024-05-01" / "hour=12"
    hour.mkdir(parents=True)
    shutil.copy(OLD_FILE, hour / "before-site.parquet")
    # A new file: the old row's values under a new id, plus the columns added since.
    new = hour / "with-site.parquet"
    duckdb.sql(
        f"COPY (SELECT * REPLACE ('6e1d8a2f-3d2c-4b68-8b54-1d9f4e3eac21' AS event_id), 'local-demo' AS site, "
        "TIMESTAMPTZ '2025-05-01 11:59:00+00' AS original_occurred_at, "
        "TIMESTAMPTZ '2025-05-01 12:00:00+00' AS sent_at, NULL::VARCHAR AS plan_violations, 'NZ' AS country "
        f"FROM '{OLD_FILE}') TO '{new}' (FORMAT PARQUET)"
    )

    con = run_queries.connect(tmp_path)
    rows = con.execute(
        "SELECT event_id, site, year(original_occurred_at), minute(sent_at), country FROM events ORDER BY event_id"
    ).fetchall()
    assert rows == [
        ("5d0c7f1e-2c1b-4a57-9a43-0c8f3f2d9b10", None, None, None, None),
        ("6e1d8a2f-3d2c-4b68-8b54-1d9f4e3eac21", "local-demo", 2025, 0, "NZ"),
    ]
    assert con.execute("SELECT count(*) FROM events WHERE dt = '2024-05-01'").fetchone() == (2,)
