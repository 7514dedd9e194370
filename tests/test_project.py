"""Project-level promises: the public surface, what its docstrings say, and the README's
commands."""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import re
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest

from plait.testing import AsyncTestClient, WebSocketDenied

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "module_name", ["plait", "plait.testing", "plait.types", "plait.channels", "plait.otel"]
)
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


def test_the_tests_run_on_every_python_the_classifiers_name() -> None:
    noxfile = ast.parse((ROOT / "noxfile.py").read_text())
    (nox_pythons,) = [
        ast.literal_eval(node.value)
        for node in noxfile.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "PYTHONS"
    ]
    assert "@nox.session(python=PYTHONS)\ndef tests(" in ast.unparse(noxfile)
    ci = re.search(r'^PYTHONS="(.+)"$', (ROOT / ".ci" / "run").read_text(), re.MULTILINE)
    assert ci, ".ci/run names the Pythons it makes visible in PYTHONS"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    prefix = "Programming Language :: Python :: 3."
    classified = [c.removeprefix("Programming Language :: Python :: ") for c in
                  project["classifiers"] if c.startswith(prefix)]  # fmt: skip
    assert nox_pythons == ci.group(1).split() == classified
    assert project["requires-python"] == f">={nox_pythons[0]}"


def docstring_section(doc: str | None, title: str) -> list[str]:
    """The names a Google-style docstring lists under ``title:`` (``Args``, ...)."""
    names: list[str] = []
    inside = False
    for line in inspect.cleandoc(doc or "").splitlines():
        if line.strip() == f"{title}:":
            inside = True
        elif inside and line and not line.startswith(" "):
            break
        elif inside and (match := re.match(r" {4}(\w+):", line)):
            names.append(match.group(1))
    return names


def public_exceptions() -> list[type[BaseException]]:
    found = []
    for module_name in ("plait", "plait.channels", "plait.testing"):
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, BaseException):
                found.append(value)
    return found


@pytest.mark.parametrize("exc_type", public_exceptions(), ids=lambda cls: cls.__name__)
def test_exceptions_document_the_arguments_they_take(exc_type: type[BaseException]) -> None:
    parameters = [
        parameter.name
        for parameter in list(inspect.signature(exc_type.__init__).parameters.values())[1:]
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    assert docstring_section(exc_type.__doc__, "Args") == parameters


@pytest.mark.anyio
async def test_websocket_denied_has_the_attributes_it_documents() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()  # websocket.connect
        if scope["path"] == "/respond":
            headers = [(b"Content-Type", b"text/plain"), (b"X-Reason", b"token")]
            start = {"type": "websocket.http.response.start", "status": 401, "headers": headers}
            await send(start)
            await send({"type": "websocket.http.response.body", "body": b"who ", "more_body": True})
            await send({"type": "websocket.http.response.body", "body": b"are you"})
        elif scope["path"] == "/close":
            await send({"type": "websocket.close", "code": 1008})
        # "/return" returns without accepting

    documented = docstring_section(WebSocketDenied.__doc__, "Attributes")
    assert documented == ["status_code", "headers", "body"]
    expected = {
        "/respond": (401, [("content-type", "text/plain"), ("x-reason", "token")], b"who are you"),
        "/close": (403, [], b""),
        "/return": (500, [], b""),
    }
    async with AsyncTestClient(app) as client:
        for path, values in expected.items():
            with pytest.raises(WebSocketDenied) as info:
                async with client.websocket_connect(path):
                    pytest.fail(f"{path}: the connection opened")
            assert tuple(getattr(info.value, name) for name in documented) == values
