"""The error trees drawn in ``tritonllm.errors`` and ``tritonllm.client._errors`` list every
exception class we define, each under the class it derives from, and nothing else: a class
added, renamed, moved or removed without its tree fails here.

The classes are found by reading the source (every folder of ``package-dir`` in
pyproject.toml, ``model_repository/`` included, whose models cannot be imported here), not by
importing it.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tritonllm import errors
from tritonllm.client import _errors as client_errors

ROOT = Path(__file__).resolve().parents[2]
TREES = {"tritonllm.errors": errors.__doc__ or "",
         "tritonllm.client._errors": client_errors.__doc__ or ""}
# A tree line: "    Root", or "    │   ├── Name  comment" (4 columns per level).
_NODE = re.compile(r"^ {4}(?P<rails>(?:[│ ] {3})*)(?P<branch>[├└]── )?(?P<name>[A-Za-z_]\w*)\b")


@dataclass(frozen=True)
class Defined:
    name: str
    bases: tuple[str, ...]
    where: str  # path:line


def _source_files() -> list[Path]:
    # package-dir = { "tritonllm.builders" = "builders", ... } (tomllib is Python 3.11+)
    line = re.search(r"^package-dir = \{(.*)\}$", (ROOT / "pyproject.toml").read_text(), re.M)
    assert line is not None, "pyproject.toml has no [tool.setuptools] package-dir line"
    folders = {ROOT / d for d in re.findall(r'"[\w.]+" = "([^"]+)"', line[1])}
    return sorted({f for d in folders for f in d.rglob("*.py") if "__pycache__" not in f.parts})


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_builtin_exception(name: str) -> bool:
    obj = getattr(builtins, name, None)
    return isinstance(obj, type) and issubclass(obj, BaseException)


def defined_exceptions() -> dict[str, list[Defined]]:
    """Name -> every class of that name that derives from an exception, in our sources."""
    classes: list[Defined] = []
    for path in _source_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = tuple(b for b in map(_base_name, node.bases) if b)
                classes.append(Defined(node.name, bases, f"{path.relative_to(ROOT)}:{node.lineno}"))
    exceptions: set[Defined] = set()
    while True:  # derived from a built-in or third-party exception, or from one of ours
        names = {c.name for c in exceptions}
        more = {c for c in classes if any(
            b in names or _is_builtin_exception(b) or b.endswith(("Error", "Exception"))
            for b in c.bases)}
        if more <= exceptions:
            break
        exceptions |= more
    found: dict[str, list[Defined]] = {}
    for c in sorted(exceptions, key=lambda c: c.where):
        found.setdefault(c.name, []).append(c)
    return found


def tree_edges(doc: str) -> set[tuple[str, str | None]]:
    """(node, parent) for every node of the trees drawn in ``doc``; roots have parent None."""
    edges: set[tuple[str, str | None]] = set()
    path: list[str] = []
    for line in doc.splitlines():
        m = _NODE.match(line)
        if m is None:
            continue
        if m["branch"] is None:
            if m["rails"]:  # a comment's continuation line
                continue
            path = [m["name"]]
            edges.add((m["name"], None))
            continue
        depth = len(m["rails"]) // 4 + 1
        if not 0 < depth <= len(path):
            raise AssertionError(f"malformed tree line: {line!r}")
        edges.add((m["name"], path[depth - 1]))
        path = [*path[:depth], m["name"]]
    return edges


DEFINED = defined_exceptions()
EDGES = set().union(*(tree_edges(doc) for doc in TREES.values()))
NODES = {name for name, _ in EDGES}


def test_the_walk_sees_every_package() -> None:
    # one class from the library, the client, perf and a Triton model (read, not imported)
    assert {"TritonLLMError", "ClientError", "ToolError", "UpstreamError"} <= set(DEFINED)
    assert ("ClientError", "TritonLLMError") in EDGES and ("ClientError", None) in EDGES


def test_one_class_per_exception_name() -> None:
    twice = {n: [c.where for c in cs] for n, cs in DEFINED.items() if len(cs) > 1}
    assert not twice, f"exception names defined more than once: {twice}"


@pytest.mark.parametrize("name", sorted(n for n in DEFINED if not n.startswith("_")))
def test_every_public_exception_is_in_a_tree_under_its_base(name: str) -> None:
    (cls,) = DEFINED[name]
    assert name in NODES, f"{name} ({cls.where}) is missing from the trees in {', '.join(TREES)}"
    ours = [b for b in cls.bases if b in DEFINED]
    if ours:
        assert any((name, b) in EDGES for b in ours), (
            f"{name} ({cls.where}) derives from {', '.join(ours)}, but the tree draws it under "
            f"{sorted(str(p) for n, p in EDGES if n == name)}")
    else:
        assert (name, None) in EDGES, f"{name} derives from none of ours: draw it as a root"


@pytest.mark.parametrize("name", sorted(n for n in DEFINED if not n.startswith("_")))
def test_every_public_exception_is_a_tritonllm_error(name: str) -> None:
    seen, todo = set(), [name]
    while todo:
        n = todo.pop()
        seen.add(n)
        todo += [b for c in DEFINED.get(n, []) for b in c.bases if b not in seen]
    assert name == "TritonLLMError" or "TritonLLMError" in seen, (
        f"{name} ({DEFINED[name][0].where}): an error a user can cause derives from "
        "TritonLLMError, so the CLI prints it on one line")


@pytest.mark.parametrize("name", sorted(n for n in DEFINED if n.startswith("_")))
def test_every_internal_exception_is_named_in_errors(name: str) -> None:
    assert f"``{name}``" in TREES["tritonllm.errors"], (
        f"{name} ({DEFINED[name][0].where}) is not named among tritonllm.errors' internal "
        "exceptions")


def test_the_trees_draw_only_classes_we_define() -> None:
    stale = sorted(NODES - set(DEFINED))
    assert not stale, f"the trees draw classes no module defines: {stale}"


def test_tree_parser() -> None:
    doc = """
    A
    ├── B        comment
    │   │        continued
    │   └── C
    └── D
                 continued Word
    """
    assert tree_edges(doc) == {("A", None), ("B", "A"), ("C", "B"), ("D", "A")}
