"""Project-level promises: the public surface and the README's test command."""

from __future__ import annotations

import ast
import importlib
import itertools
import re
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("module_name", ["plait", "plait.testing", "plait.types", "plait.channels"])
def test_all_lists_exactly_the_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        getattr(module, name)  # names exported lazily (RedisBackend) load now
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in ("TYPE_CHECKING", "Any")
    }
    assert isinstance(module.__all__, tuple)
    assert set(module.__all__) == public
    aliases = documented_aliases()
    for name in module.__all__:
        value = getattr(module, name)
        if isinstance(value, type) or (callable(value) and hasattr(value, "__code__")):
            assert value.__doc__, f"{module_name}.{name} has no docstring"
        else:  # a type alias: documented by the string that follows its assignment
            assert name in aliases, f"{module_name}.{name} has no docstring"


def documented_aliases() -> set[str]:
    """Names assigned at module level in src/plait and followed by a docstring."""
    names: set[str] = set()
    for path in (ROOT / "src" / "plait").rglob("*.py"):
        body = ast.parse(path.read_text()).body
        for node, following in itertools.pairwise(body):
            target = node.target if isinstance(node, ast.AnnAssign) else None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
            if (
                isinstance(target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                names.add(target.id)
    return names


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- test-command -->\s*```(?:sh|bash|console)?\n(.+?)\n```", readme)
    assert match, "the README marks its test command with <!-- test-command -->"
    command = match.group(1).strip()
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert command in ci_lines


def test_the_readme_demo_command_runs_the_demo_session() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- demo-command -->\s*```(?:sh|bash|console)?\n(.+?)\n```", readme)
    assert match, "the README marks its demo command with <!-- demo-command -->"
    assert match.group(1).strip().endswith("nox -s demo")
    assert "def demo(" in (ROOT / "noxfile.py").read_text()
