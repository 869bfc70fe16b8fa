"""Static checks of athena/: the queries prune partitions and take their date range as
parameters, and the DDL matches what the pipeline writes. (Their answers are checked by
lake-tools/tests/athena_queries.rs, which runs them with DuckDB.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ATHENA = Path(__file__).resolve().parents[1]
ROOT = ATHENA.parent
QUERIES = sorted((ATHENA / "queries").glob("*.sql"))


def code(sql: str) -> str:
    """The SQL without comments."""
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


def ddl_columns(name: str) -> list[tuple[str, str]]:
    text = code((ATHENA / "ddl" / name).read_text())
    body = text.split("(", 1)[1].split("PARTITIONED BY")[0]
    return re.findall(r"^\s+([a-z_0-9]+)\s+([a-z]+),?\s*$", body.split(")")[0], re.M)


def test_there_are_queries_for_every_question():
    names = {p.stem.split("_", 1)[1] for p in QUERIES}
    assert {"events_by_type_hour", "events_by_type_day", "unique_users_by_day", "top_pages",
            "funnel_page_view_to_purchase", "bot_share", "late_events", "dead_letter_reasons",
            "site_visitors_by_day", "site_top_pages"} <= names


@pytest.mark.parametrize("path", QUERIES, ids=lambda p: p.stem)
def test_query_is_one_statement_pruned_by_a_parameterised_dt_range(path):
    sql = code(path.read_text())
    assert ";" not in sql, "one statement per file, no semicolon (Athena runs one at a time)"
    assert re.search(r"\bFROM\s+(events|dead_letter)\b", sql), "reads the Glue tables"
    assert len(re.findall(r"\bdt\s+BETWEEN\s+\?\s+AND\s+\?", sql)) == 1, "one dt BETWEEN ? AND ? predicate"
    assert sql.count("?") == 2, "exactly the two date parameters"
    assert path.read_text().startswith("--"), "starts with a comment saying what it answers"


def test_events_ddl_matches_lake_columns():
    schema = json.loads((ROOT / "schemas" / "lake_columns.json").read_text())
    assert ddl_columns("events.sql") == [(c["name"], c["type"]) for c in schema["columns"]]
    text = (ATHENA / "ddl" / "events.sql").read_text()
    assert "PARTITIONED BY (dt string, hour string)" in text
    assert "events/dt=${dt}/hour=${hour}/" in text


def test_dead_letter_ddl_matches_what_the_consumer_writes():
    # The NDJSON keys are the json!({...}) keys of encode_dead_letter in stream-consumer/src/lake.rs.
    source = (ROOT / "stream-consumer" / "src" / "lake.rs").read_text()
    body = source.split("pub fn encode_dead_letter", 1)[1].split("});", 1)[0]
    keys = re.findall(r'^\s+"([a-z_0-9]+)":', body, re.M)
    assert keys, "encode_dead_letter not found"
    # Every key is text but `line`, the bad event's line in its packed record.
    assert ddl_columns("dead_letter.sql") == [(k, "int" if k == "line" else "string") for k in keys]
    text = (ATHENA / "ddl" / "dead_letter.sql").read_text()
    assert "org.openx.data.jsonserde.JsonSerDe" in text
    assert "dead-letter/dt=${dt}/hour=${hour}/" in text
