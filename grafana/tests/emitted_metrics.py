"""The metrics the Rust code really emits, read from its source (standard library only).

Parses every `metrics::counter!` / `gauge!` / `histogram!` registration in the workspace's
`*/src/**/*.rs` (not tests, examples or `#[cfg(test)]` items), resolving `const NAME: &str`
names, and derives from them what each exporter publishes:

* Prometheus (local stack): counters and gauges under their name; a histogram whose name matches
  the exporter's bucket matcher (service-kit/src/telemetry.rs `Matcher::Suffix`) as `_bucket`,
  `_sum`, `_count`, any other histogram as a summary (the name, `_sum`, `_count`).
* CloudWatch EMF (Lambda; metrics_cloudwatch_embedded 0.10, collector.rs): every metric under
  its own name, no suffixes (a histogram's values go out as a list, so CloudWatch computes its
  percentiles), in namespace `EMF_NAMESPACE`, with one dimension set: the recorder's default
  dimension `function` (the name main.rs passes to `MetricsExport::for_process`) plus every
  label of the registration. CloudWatch matches dimension sets exactly, so a query must name
  that whole set.

Code that never runs on Lambda (LOCAL_ONLY) emits Prometheus metrics only.

`problems()` holds the readers of those metrics to them: the Grafana dashboards and the
CloudWatch dashboard body (grafana/tests/test_metric_names.py) and the Terraform alarms
(terraform/tests/test_alarms.py), so that every reader is checked by the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
TELEMETRY_RS = REPO_ROOT / "service-kit" / "src" / "telemetry.rs"

# Files compiled into the Lambda binaries but only run off Lambda: stream-consumer's main.rs
# returns into the Lambda runtime before it builds the local Kinesis runner.
LOCAL_ONLY = {"stream-consumer/src/runner.rs"}

# What stays out of the parse: build output, local state, and code that only tests run.
SKIPPED_DIRS = {"target", ".local", ".git", "node_modules", "tests", "examples", "benches"}

MACRO_RE = re.compile(r"(?<![\w:])(?:metrics::)?(counter|gauge|histogram)!\s*\(")
CONST_RE = re.compile(
    r"\bconst\s+([A-Z_][A-Z0-9_]*)\s*:\s*&\s*(?:'static\s+)?str\s*=\s*\"((?:\\.|[^\"\\])*)\"\s*;")
STRING_RE = re.compile(r'^"((?:\\.|[^"\\])*)"$')
# A label value that is a string literal, possibly made owned: "x", "x".to_owned(), "x".into().
LITERAL_VALUE_RE = re.compile(r'^"((?:\\.|[^"\\])*)"(?:\s*\.\s*(?:to_owned|to_string|into)\s*\(\s*\))?$')
RAW_STRING_RE = re.compile(r'b?r(#*)"')
PATH_RE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*::)*([A-Za-z_][A-Za-z0-9_]*)$")


class ParseError(Exception):
    """A registration this parser does not understand: better to fail than to miss a metric."""


@dataclass(frozen=True)
class Registration:
    kind: str  # counter, gauge, histogram
    name: str
    # (label, values) pairs in macro order: the literal, or the literals a `for` loop around the
    # macro binds the value to; None when the value is computed at run time.
    labels: tuple[tuple[str, frozenset[str] | None], ...]
    path: str  # relative to the repository root
    line: int

    @property
    def crate(self) -> str:
        return self.path.split("/", 1)[0]


# --------------------------------------------------------------------------------------------
# Lexing: comments out, strings blanked for structure, `#[cfg(test)]` items removed
# --------------------------------------------------------------------------------------------


def _lex(text: str) -> tuple[str, str]:
    """(code, mask), both as long as `text`: code is text with comments turned into spaces; mask
    also has the inside of every string and char literal blanked, so brackets, commas and macro
    names are only found where they are code."""
    code, mask = list(text), list(text)
    i, n = 0, len(text)

    def blank(a: int, b: int, both: bool) -> None:
        for k in range(a, b):
            if text[k] != "\n":
                mask[k] = " "
                if both:
                    code[k] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j, both=True)
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j, both=True)
            i = j
        elif (m := RAW_STRING_RE.match(text, i)) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.find('"' + m.group(1), m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            blank(m.end(), end - 1 - len(m.group(1)), both=False)
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(i + 1, j, both=False)
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}') or a lifetime ('static), which has no closing quote.
            if i + 1 < n and text[i + 1] == "\\":
                j = text.find("'", i + 2)
            elif i + 2 < n and text[i + 2] == "'":
                j = i + 2
            else:
                j = -1
            if j > 0:
                blank(i + 1, j, both=False)
                i = j + 1
            else:
                i += 1
        else:
            i += 1
    return "".join(code), "".join(mask)


def _closing(mask: str, open_at: int) -> int:
    """Index of the bracket closing the one at `open_at` (any of (), [], {})."""
    depth = 0
    for k in range(open_at, len(mask)):
        if mask[k] in "([{":
            depth += 1
        elif mask[k] in ")]}":
            depth -= 1
            if depth == 0:
                return k
    raise ParseError(f"unbalanced bracket at offset {open_at}")


def _without_test_items(code: str, mask: str) -> tuple[str, str]:
    """Blank every item under `#[cfg(test)]` (a test module, function or use)."""
    code_l, mask_l = list(code), list(mask)
    for m in re.finditer(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]", mask):
        k = m.end()
        while k < len(mask) and mask[k] not in "{;":
            k += 1
        end = _closing(mask, k) if k < len(mask) and mask[k] == "{" else k
        for j in range(m.start(), min(end + 1, len(mask))):
            if mask[j] != "\n":
                code_l[j] = mask_l[j] = " "
    return "".join(code_l), "".join(mask_l)


def _split_args(code: str, mask: str) -> list[str]:
    """Top-level comma-separated arguments."""
    args, depth, start = [], 0, 0
    for k, ch in enumerate(mask):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(code[start:k])
            start = k + 1
    args.append(code[start:])
    return [a.strip() for a in args if a.strip()]


def _unescape(literal: str) -> str:
    return literal.encode().decode("unicode_escape") if "\\" in literal else literal


# --------------------------------------------------------------------------------------------
# Registrations
# --------------------------------------------------------------------------------------------


def rust_sources(root: Path = REPO_ROOT) -> list[Path]:
    """Every .rs file of a crate's src/ tree that is built into a binary or library."""
    found = []
    for path in sorted(root.rglob("*.rs")):
        parts = path.relative_to(root).parts
        if SKIPPED_DIRS & set(parts[:-1]) or "src" not in parts:
            continue
        found.append(path)
    return found


ARRAY_CONST_RE = re.compile(
    r"\bconst\s+([A-Z_][A-Z0-9_]*)\s*:\s*\[\s*&\s*(?:'static\s+)?str\s*;[^\]]*\]\s*=\s*\[([^\]]*)\]\s*;")
FOR_RE = re.compile(r"\bfor\s+([a-z_][A-Za-z0-9_]*)\s+in\s+([^{;]*?)\s*\{")


def _string_list(items: str) -> frozenset[str] | None:
    """The strings of an array literal's inside, or None if any element is not a string literal."""
    parts = [p.strip() for p in items.split(",") if p.strip()]
    values = [STRING_RE.match(p) for p in parts]
    return frozenset(_unescape(v.group(1)) for v in values) if parts and all(values) else None


def array_constants(sources: dict[str, str]) -> dict[str, frozenset[str]]:
    """NAME -> values of every `const NAME: [&str; N] = ["...", ...]`."""
    consts: dict[str, frozenset[str]] = {}
    for rel, text in sources.items():
        code, _ = _lex(text)
        for name, items in ARRAY_CONST_RE.findall(code):
            values = _string_list(items)
            if values is not None:
                if consts.get(name, values) != values:
                    raise ParseError(f"const {name} has two values; {rel}")
                consts[name] = values
    return consts


def _loop_values(ident: str, at: int, code: str, mask: str, arrays: dict[str, frozenset[str]]):
    """The literals `ident` takes if the innermost `for ident in ...` around offset `at` iterates
    an array literal of strings or a const array of them; None otherwise."""
    best = None
    for m in FOR_RE.finditer(mask, 0, at):
        if m.group(1) == ident and _closing(mask, m.end() - 1) > at:
            best = m
    if best is None:
        return None
    iterable = code[best.start(2):best.end(2)].strip()
    if iterable.startswith("[") and iterable.endswith("]"):
        return _string_list(iterable[1:-1])
    path = PATH_RE.match(iterable)
    return arrays.get(path.group(1)) if path else None


def string_constants(sources: dict[str, str]) -> dict[str, str]:
    """NAME -> value of every `const NAME: &str = "..."`; a name defined twice differently is
    ambiguous, so it fails."""
    consts: dict[str, str] = {}
    for rel, text in sources.items():
        code, _ = _lex(text)
        for name, value in CONST_RE.findall(code):
            value = _unescape(value)
            if consts.get(name, value) != value:
                raise ParseError(f"const {name} has two values ({consts[name]!r}, {value!r}); {rel}")
            consts[name] = value
    return consts


def _resolve(arg: str, consts: dict[str, str], where: str) -> str:
    if m := STRING_RE.match(arg):
        return _unescape(m.group(1))
    if (m := PATH_RE.match(arg)) and m.group(1) in consts:
        return consts[m.group(1)]
    raise ParseError(f"{where}: cannot resolve {arg!r} to a string (a literal or a const &str)")


def parse_registrations(sources: dict[str, str]) -> list[Registration]:
    """The registrations in `sources` (relative path -> Rust text)."""
    consts = string_constants(sources)
    arrays = array_constants(sources)
    found = []
    for rel, text in sources.items():
        code, mask = _without_test_items(*_lex(text))
        for m in MACRO_RE.finditer(mask):
            open_at = m.end() - 1
            close = _closing(mask, open_at)
            line = text.count("\n", 0, m.start()) + 1
            where = f"{rel}:{line}"
            args = _split_args(code[open_at + 1:close], mask[open_at + 1:close])
            if not args:
                raise ParseError(f"{where}: {m.group(1)}! without a name")
            if re.match(r"^(target|level)\s*:", args[0]):
                raise ParseError(f"{where}: the target:/level: form is not parsed here; extend emitted_metrics.py")
            name = _resolve(args[0], consts, where)
            labels = []
            for arg in args[1:]:
                key, sep, value = arg.partition("=>")
                if not sep:
                    raise ParseError(f"{where}: label argument {arg!r} is not `key => value`")
                value = value.strip()
                if literal := LITERAL_VALUE_RE.match(value):
                    values = frozenset([_unescape(literal.group(1))])
                elif re.fullmatch(r"[a-z_][A-Za-z0-9_]*", value):
                    values = _loop_values(value, m.start(), code, mask, arrays)
                else:
                    values = None
                labels.append((_resolve(key.strip(), consts, where), values))
            found.append(Registration(m.group(1), name, tuple(labels), rel, line))
    return found


@cache
def registrations() -> tuple[Registration, ...]:
    sources = {str(p.relative_to(REPO_ROOT)): p.read_text() for p in rust_sources()}
    return tuple(parse_registrations(sources))


def macro_count() -> int:
    """How many metric macros the sources hold, counted without the parser (a cross-check)."""
    total = 0
    for path in rust_sources():
        code, mask = _without_test_items(*_lex(path.read_text()))
        total += len(MACRO_RE.findall(mask))
    return total


# --------------------------------------------------------------------------------------------
# What each exporter publishes
# --------------------------------------------------------------------------------------------


def _telemetry_rs() -> str:
    return TELEMETRY_RS.read_text()


def emf_namespace() -> str:
    m = re.search(r'\bconst\s+EMF_NAMESPACE\s*:\s*&\s*str\s*=\s*"([^"]+)"', _telemetry_rs())
    if not m:
        raise ParseError(f"EMF_NAMESPACE not found in {TELEMETRY_RS}")
    return m.group(1)


def emf_default_dimensions() -> list[str]:
    """The dimensions the EMF recorder adds to every metric (`.with_dimension("...", ...)`)."""
    dims = re.findall(r'\.with_dimension\(\s*"([^"]+)"', _telemetry_rs())
    if not dims:
        raise ParseError(f"no .with_dimension(...) on the EMF builder in {TELEMETRY_RS}")
    return dims


def function_by_crate() -> dict[str, str]:
    """crate directory -> the `function` dimension its binary publishes (MetricsExport::for_process)."""
    out = {}
    for path in rust_sources():
        for value in re.findall(r'for_process\(\s*"([^"]+)"', path.read_text()):
            crate = str(path.relative_to(REPO_ROOT)).split("/", 1)[0]
            if out.get(crate, value) != value:
                raise ParseError(f"{crate} passes two names to for_process: {out[crate]!r}, {value!r}")
            out[crate] = value
    return out


def prometheus_bucket_suffixes() -> list[str]:
    """Histogram name suffixes the Prometheus exporter gives buckets (the rest become summaries)."""
    return re.findall(r'Matcher::Suffix\(\s*"([^"]+)"', _telemetry_rs())


def prometheus_names() -> set[str]:
    """Every series name the local Prometheus endpoints expose."""
    suffixes = prometheus_bucket_suffixes()
    names = set()
    for r in registrations():
        names.add(r.name)
        if r.kind == "histogram":
            names |= {f"{r.name}_sum", f"{r.name}_count"}
            if any(r.name.endswith(s) for s in suffixes):
                names.add(f"{r.name}_bucket")
    return names


@dataclass(frozen=True)
class EmfSeries:
    """One metric as CloudWatch stores it from EMF: a name and one exact dimension set."""

    name: str
    dimensions: frozenset[str]


@dataclass
class EmfValues:
    """The values each dimension of one EmfSeries takes; None for a label set at run time."""

    values: dict[str, set[str] | None]


def emf_series() -> dict[EmfSeries, EmfValues]:
    """Everything the Lambda binaries publish in EMF, with the dimension values the code fixes."""
    default = emf_default_dimensions()
    functions = function_by_crate()
    out: dict[EmfSeries, EmfValues] = {}
    for r in registrations():
        if r.path in LOCAL_ONLY:
            continue
        keys = [k for k, _ in r.labels]
        clash = set(keys) & set(default)
        if clash:
            raise ParseError(f"{r.path}:{r.line}: label {clash} collides with a default EMF dimension")
        series = EmfSeries(r.name, frozenset([*default, *keys]))
        entry = out.setdefault(series, EmfValues({k: set() for k in series.dimensions}))
        # `function` is set per binary; a library crate (no for_process of its own) runs in any.
        # Other default dimensions would carry values the recorder's caller chooses.
        known = {k: None for k in default}
        if "function" in known:
            known["function"] = {functions[r.crate]} if r.crate in functions else set(functions.values())
        known |= {k: None if v is None else set(v) for k, v in r.labels}
        for key, values in known.items():
            current = entry.values[key]
            entry.values[key] = None if current is None or values is None else current | values
    return out


# --------------------------------------------------------------------------------------------
# Readers held to what is emitted
# --------------------------------------------------------------------------------------------


def problems(uses: Iterable) -> list[str]:
    """Why each of `uses` reads nothing the code emits (empty when every one matches).

    A use is a dashlib.MetricUse: `where`, `namespace`, `name`, `dimensions` (dimension -> value,
    None for a value chosen at deploy or view time) and `exact` (False where only some dimensions
    are named). Its namespace must be AWS's own (`AWS/...`) or EMF_NAMESPACE, since a misspelt
    one reads nothing and no other check notices; in EMF_NAMESPACE the name, the whole dimension
    set and every fixed value must be ones the Lambda binaries emit."""
    namespace, emitted = emf_namespace(), emf_series()
    out = []
    for use in uses:
        if use.namespace != namespace:
            if not str(use.namespace).startswith("AWS/"):
                out.append(f"{use.where}: namespace {use.namespace!r} is neither AWS/... nor {namespace!r}")
            continue
        sets = {s.dimensions: v for s, v in emitted.items() if s.name == use.name}
        if not sets:
            out.append(f"{use.where}: {use.name!r} is not a metric the Lambda binaries emit in EMF")
            continue
        dims = use.dimensions
        matching = [v for d, v in sets.items() if (d == set(dims) if use.exact else set(dims) <= d)]
        if not matching:
            out.append(f"{use.where}: {use.name} has dimensions {sorted(map(sorted, sets))}, not {sorted(dims)}")
            continue
        for key, value in dims.items():
            if value is None:
                continue
            allowed = [v.values[key] for v in matching]
            if all(a is not None and value not in a for a in allowed):
                known = sorted(set().union(*(a for a in allowed if a)))
                out.append(f"{use.where}: {use.name} {key}={value!r} is never emitted (the code sets {known})")
    return out
