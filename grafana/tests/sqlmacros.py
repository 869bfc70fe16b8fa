"""What Grafana does to a PostgreSQL panel's SQL before PostgreSQL sees it, for one time range and
one value per dashboard variable (standard library only).

Two steps, in Grafana's order:
1. the browser interpolates dashboard variables: `$site`, `${site}`, `[[site]]` as the raw value,
   `${site:sqlstring}` quoted as an SQL string (' doubled), `${site:singlequote}` likewise;
2. the server expands the macros, `$__name(args)`, as pkg/tsdb/grafana-postgresql-datasource/
   macros.go does: the time range as RFC 3339 UTC text (Go's time.RFC3339Nano: fractional
   seconds only when non-zero, trailing zeros dropped). An unknown macro is an error there, and
   here.
Only what our dashboards can use is implemented; anything else raises, so a panel cannot use a
macro the test does not expand exactly.
"""

from __future__ import annotations

import datetime as dt
import re

# Grafana's macro pattern: `\$([_a-zA-Z0-9]+)\(([^\)]*)\)`.
MACRO_RE = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")
# ${name}, ${name:format}, $name, [[name]] (not `$__macro(`: those are the server's).
VARIABLE_RE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)(?!\w|\()|\[\[(\w+)\]\]")


class MacroError(ValueError):
    """A macro or variable that Grafana would reject, or that this module does not implement."""


def rfc3339nano(t: dt.datetime) -> str:
    """Go's time.RFC3339Nano of an instant in UTC: 2024-05-01T22:00:00Z, 2024-05-01T22:00:00.5Z."""
    if t.tzinfo is None:
        raise MacroError(f"naive datetime {t!r}: Grafana's range is an instant")
    t = t.astimezone(dt.timezone.utc)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += "." + f"{t.microsecond:06d}".rstrip("0")
    return text + "Z"


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def interpolate_variables(sql: str, variables: dict[str, str]) -> str:
    """Step 1: the dashboard variables, each with one selected value."""

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        fmt = m.group(2)
        if name.startswith("__"):
            raise MacroError(f"global variable ${name} is not expanded here")
        if name not in variables:
            raise MacroError(f"variable ${name} has no value")
        value = variables[name]
        if fmt is None or fmt == "raw":
            return value
        if fmt in ("sqlstring", "singlequote"):
            return sql_string(value)
        raise MacroError(f"variable format {fmt!r} is not expanded here")

    return VARIABLE_RE.sub(repl, sql)


def expand_macros(sql: str, start: dt.datetime, end: dt.datetime) -> str:
    """Step 2: Grafana's PostgreSQL macros for the time range [start, end]."""
    frm, to = rfc3339nano(start), rfc3339nano(end)

    def repl(m: re.Match) -> str:
        name, args = m.group(1), [a.strip() for a in m.group(2).split(",")]
        if name == "__timeFilter":
            if not args[0]:
                raise MacroError("missing time column argument for macro __timeFilter")
            return f"{args[0]} BETWEEN '{frm}' AND '{to}'"
        if name == "__timeFrom":
            return f"'{frm}'"
        if name == "__timeTo":
            return f"'{to}'"
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {int(start.timestamp())} AND {args[0]} <= {int(end.timestamp())}"
        raise MacroError(f"unknown macro {name!r}")

    return MACRO_RE.sub(repl, sql)


def render(sql: str, start: dt.datetime, end: dt.datetime, variables: dict[str, str]) -> str:
    """The SQL PostgreSQL receives for a panel viewed over [start, end] with `variables` set."""
    return expand_macros(interpolate_variables(sql, variables), start, end)
