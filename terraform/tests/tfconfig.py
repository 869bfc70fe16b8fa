"""Parse every terraform/*.tf with `hcl2` into one queryable Config (for the static tests).

`hcl2` is the module installed by checkov's bc-python-hcl2 dependency (see
scripts/requirements/terraform.txt). That parser wraps every attribute value in a one-element
list; `attr()` unwraps it (and leaves values alone for a parser that does not wrap).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

try:
    import hcl2
except ImportError:  # pragma: no cover - reported as a skip by the `tf` fixture
    hcl2 = None

TF_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TF_DIR.parent

_WRAPS_ATTRIBUTES = hcl2 is not None and isinstance(hcl2.loads('a = "x"\n')["a"], list)


def attr(body: dict, key: str, default: Any = None) -> Any:
    """An attribute's value, unwrapped from the parser's one-element list."""
    if key not in body:
        return default
    value = body[key]
    if _WRAPS_ATTRIBUTES and isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def blocks(body: dict, key: str) -> list[dict]:
    """Nested blocks named `key` (always a list of bodies)."""
    value = body.get(key, [])
    return value if isinstance(value, list) else [value]


def expr(value: Any) -> str:
    """Any value as text, for matching references inside expressions."""
    return value if isinstance(value, str) else repr(value)


class Config:
    """All top-level .tf files merged: resources/data by type and name, locals, variables."""

    def __init__(self, tf_dir: Path) -> None:
        self.files: dict[str, str] = {}
        self.resources: dict[str, dict[str, dict]] = {}
        self.data: dict[str, dict[str, dict]] = {}
        self.locals: dict[str, Any] = {}
        self.variables: dict[str, dict] = {}
        for path in sorted(tf_dir.glob("*.tf")):
            text = path.read_text()
            self.files[path.name] = text
            parsed = hcl2.loads(text)
            for kind, target in (("resource", self.resources), ("data", self.data)):
                for entry in parsed.get(kind, []):
                    for rtype, named in entry.items():
                        for name, body in named.items():
                            assert name not in target.setdefault(rtype, {}), f"duplicate {kind} {rtype}.{name}"
                            target[rtype][name] = body
            for entry in parsed.get("locals", []):
                for key in entry:
                    if not key.startswith("__"):
                        self.locals[key] = attr(entry, key)
            for entry in parsed.get("variable", []):
                for name, body in entry.items():
                    self.variables[name] = body

    def resource(self, rtype: str, name: str) -> dict:
        assert name in self.resources.get(rtype, {}), f"missing resource {rtype}.{name}"
        return self.resources[rtype][name]

    def default(self, variable: str) -> Any:
        assert variable in self.variables, f"missing variable {variable}"
        return attr(self.variables[variable], "default")

    def resolve(self, value: Any) -> Any:
        """`value` with every `${local.x}` whose local is a literal string replaced by that string
        (recursively through dicts and lists); other expressions are left as they are."""
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, str):
            return value

        def literal(m: re.Match) -> str:
            local = self.locals.get(m.group(1))
            return local if isinstance(local, str) and "${" not in local else m.group(0)

        return re.sub(r"\$\{local\.([A-Za-z_][A-Za-z0-9_]*)\}", literal, value)

    def all_text(self) -> str:
        return "\n".join(self.files.values())


def local_refs(expression: str) -> list[str]:
    return re.findall(r"local\.([A-Za-z_][A-Za-z0-9_]*)", expression)
