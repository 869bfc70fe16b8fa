"""CloudWatch Embedded Metric Format: telling EMF lines from log lines, and validating them.

A Lambda's stdout goes to CloudWatch Logs line by line. Our binaries write two kinds of JSON
lines there: tracing's log lines (`{"timestamp":…,"level":…,"message":…}`) and EMF documents,
which CloudWatch recognises by the `_aws` member of the root object. Anything else (a non-JSON
line) is a plain log line.

Validation is two JSON Schemas, both applied with the `jsonschema` package:
  emf.schema.json       the specification's structure (_aws, Timestamp, CloudWatchMetrics,
                        directives, dimension sets of at most 30 names, at most 100 metrics, units)
  references_schema()   derived from one line's own _aws: every dimension named there is a
                        string member of the root, every metric a number or an array of at most
                        100 numbers — the cross-references a static schema cannot express.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("emf.schema.json")


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _validator(schema: dict):
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@functools.lru_cache(maxsize=1)
def _spec_validator():
    return _validator(load_schema())


def classify(line: str) -> tuple[str, dict | None]:
    """("emf", doc) for a JSON object with `_aws`, ("log", doc) for another JSON object,
    ("text", None) for anything else."""
    text = line.strip()
    if not text.startswith("{"):
        return "text", None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return "text", None
    if not isinstance(doc, dict):
        return "text", None
    return ("emf" if "_aws" in doc else "log"), doc


def references_schema(doc: dict) -> dict:
    """The schema one EMF document's target members must meet, from its own `_aws`."""
    schema = load_schema()
    defs = schema["$defs"]
    properties: dict[str, dict] = {}
    required: set[str] = set()
    directives = doc.get("_aws", {}).get("CloudWatchMetrics", [])
    for directive in directives if isinstance(directives, list) else []:
        for dimension_set in directive.get("Dimensions", []) or []:
            for name in dimension_set if isinstance(dimension_set, list) else []:
                if isinstance(name, str):
                    required.add(name)
                    properties[name] = defs["DimensionValue"]
        for metric in directive.get("Metrics", []) or []:
            name = metric.get("Name") if isinstance(metric, dict) else None
            if isinstance(name, str):
                required.add(name)
                properties[name] = defs["MetricValue"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": sorted(required),
        "properties": properties,
    }


def errors(doc: dict, now_ms: int | None = None) -> list[str]:
    """Every way `doc` breaks the specification (empty when it is a valid EMF document). With
    `now_ms`, the Timestamp must also be within a day of it: milliseconds, not seconds."""
    found = [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in _spec_validator().iter_errors(doc)
    ]
    if found:
        return found
    if now_ms is not None and abs(doc["_aws"]["Timestamp"] - now_ms) > 86_400_000:
        return [f"_aws/Timestamp: {doc['_aws']['Timestamp']} is not within a day of now ({now_ms} ms)"]
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}"
        for e in _validator(references_schema(doc)).iter_errors(doc)
    ]


@dataclass
class Tally:
    """What one process (or all of them) printed on stdout."""

    emf: int = 0
    logs: int = 0
    text: int = 0
    metrics: set[str] = field(default_factory=set)
    invalid: list[str] = field(default_factory=list)
    error_logs: dict[str, int] = field(default_factory=dict)  # ERROR log messages -> how many

    def add_line(self, line: str, source: str = "") -> None:
        kind, doc = classify(line)
        if kind == "text":
            self.text += bool(line.strip())
            return
        if kind == "log":
            self.logs += 1
            if str(doc.get("level", "")).upper() == "ERROR":
                message = f"{source}: {str(doc.get('message', doc))[:200]}"
                self.error_logs[message] = self.error_logs.get(message, 0) + 1
            return
        self.emf += 1
        for directive in doc["_aws"].get("CloudWatchMetrics", []) or []:
            for metric in directive.get("Metrics", []) or []:
                if isinstance(metric, dict) and isinstance(metric.get("Name"), str):
                    self.metrics.add(metric["Name"])
        for problem in errors(doc, int(time.time() * 1000)):
            self.invalid.append(f"{source}: {problem}")

    def merge(self, other: "Tally") -> None:
        self.emf += other.emf
        self.logs += other.logs
        self.text += other.text
        self.metrics |= other.metrics
        self.invalid += other.invalid
        for message, n in other.error_logs.items():
            self.error_logs[message] = self.error_logs.get(message, 0) + n
