"""The seams between plait's modules are sealed (issue 17, point 6), checked statically.

- No module reads a private name (``obj._name``) that it does not define itself: each
  consumer goes through a small documented interface of its provider.
- No module imports another's private name (``from ._x import _y``).
- Nothing travels through the ASGI scope under a ``plait.*`` key, where middleware and
  handlers could read or forge it.
- The engine (``_connection``, ``_outbound``, ``_reader``, ``_ending``, ``_lifecycle``,
  ``_state``) does not import the WebSocket's module for its helpers: ``validate_close``
  lives in ``_state``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src" / "plait"
MODULES = sorted(SOURCE.rglob("*.py"))
STDLIB_PRIVATE = {"sys._getframe", "parts._replace"}  # the standard library's own API


def own_names(tree: ast.AST) -> set[str]:
    """Every name a module defines: functions, classes, stored attributes, slots."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
    return names


def module_id(path: Path) -> str:
    return str(path.relative_to(SOURCE.parent))


@pytest.mark.parametrize("path", MODULES, ids=[module_id(p) for p in MODULES])
def test_no_module_reads_another_modules_private_names(path: Path) -> None:
    tree = ast.parse(path.read_text())
    own = own_names(tree)
    foreign = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__") or name in own:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        if ast.unparse(node) not in STDLIB_PRIVATE:
            foreign.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not foreign, f"{module_id(path)} reads private names of other modules: {foreign}"


@pytest.mark.parametrize("path", MODULES, ids=[module_id(p) for p in MODULES])
def test_no_module_imports_another_modules_private_names(path: Path) -> None:
    tree = ast.parse(path.read_text())
    private = [
        f"line {node.lineno}: from {'.' * node.level}{node.module} import {alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert not private, f"{module_id(path)} imports private names: {private}"


def scope_keys(tree: ast.AST) -> list[str]:
    """``scope["plait..."]`` and ``scope.get("plait...")`` (also setdefault, pop), on any
    expression whose text names a scope."""
    found = []
    for node in ast.walk(tree):
        key: ast.expr | None = None
        target: ast.expr | None = None
        if isinstance(node, ast.Subscript):
            key, target = node.slice, node.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "setdefault", "pop")
            and node.args
        ):
            key, target = node.args[0], node.func.value
        if (
            isinstance(key, ast.Constant)
            and isinstance(key.value, str)
            and key.value.startswith("plait")
            and target is not None
            and "scope" in ast.unparse(target)
        ):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=[module_id(p) for p in MODULES])
def test_nothing_travels_through_the_asgi_scope(path: Path) -> None:
    keys = scope_keys(ast.parse(path.read_text()))
    assert not keys, f"{module_id(path)} passes plait's own values in the ASGI scope: {keys}"


def test_the_scope_check_finds_a_side_channel() -> None:
    tree = ast.parse('scope["plait.provided"] = x\nwebsocket.scope.get("plait.trace")')
    assert len(scope_keys(tree)) == 2


ENGINE = ("_connection", "_outbound", "_reader", "_ending", "_lifecycle", "_state")


@pytest.mark.parametrize("name", ENGINE)
def test_the_engine_does_not_import_the_websocket_for_helpers(name: str) -> None:
    tree = ast.parse((SOURCE / f"{name}.py").read_text())
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "_websocket"
        for alias in node.names
    ]
    # The connection builds the WebSocket it runs; nothing else of that module is used.
    allowed = {"WebSocket", "check_scope", "run_by"} if name == "_connection" else set()
    assert set(imported) <= allowed
