"""What code a stage runs, as a digest for its cache key.

A stage's key covers the modules it imports (transitively, within the package) and the stage
function itself, hashed as syntax trees without docstrings: editing a comment or a docstring,
or a module the stage never imports, reruns nothing; editing code the stage runs reruns it.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from collections.abc import Callable
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).parent


def _tree(source: str) -> ast.AST:
    tree = ast.parse(source)
    for node in ast.walk(tree):  # docstrings are prose: drop them
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _imports(tree: ast.AST, top_level_only: bool) -> set[str]:
    """Package modules a module imports with relative imports (`from .x import y`, `from . import x`); with
    `top_level_only`, only those run at import time (not inside functions or `if TYPE_CHECKING:`)."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names)
    return {m for m in found if (PACKAGE / f"{m}.py").exists()}


@cache
def _module(name: str) -> tuple[str, frozenset[str], frozenset[str]]:
    """(digest of the module's syntax tree, modules it imports anywhere, modules it imports at import time)."""
    tree = _tree((PACKAGE / f"{name}.py").read_text())
    return (
        hashlib.sha256(ast.dump(tree).encode()).hexdigest(),
        frozenset(_imports(tree, False)),
        frozenset(_imports(tree, True)),
    )


def import_graph(top_level_only: bool = True) -> dict[str, set[str]]:
    """Every module of the package → the package modules it imports."""
    return {p.stem: set(_module(p.stem)[2 if top_level_only else 1]) for p in sorted(PACKAGE.glob("*.py"))}


def closure(*modules: str) -> list[str]:
    """`modules` and every package module they import, directly or not (function-level imports included)."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(_module(m)[1])
    return sorted(seen)


def code_digest(fn: Callable, *modules: str) -> str:
    """Digest of the stage function `fn` and of `modules` with everything they import, and of the manifest schema
    when they import `manifest` (the one module that reads it: the schema's constants are written into artifacts)."""
    h = hashlib.sha256(ast.dump(_tree(textwrap.dedent(inspect.getsource(fn)))).encode())
    modules_run = closure(*modules)
    for m in modules_run:
        h.update(f"{m}\0{_module(m)[0]}\n".encode())
    if "manifest" in modules_run:
        for schema in sorted((PACKAGE / "schemas").glob("*.json")):
            h.update(schema.read_bytes())
    return h.hexdigest()
