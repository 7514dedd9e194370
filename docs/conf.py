"""Sphinx configuration for plait's documentation: ``nox -s docs``.

Pages are reStructuredText. Code comes only from ``examples/`` through
``literalinclude`` (``tests/test_docs.py`` checks that), and the reference is generated
from the docstrings by autodoc, read as Google style by napoleon.
"""

from __future__ import annotations

import ast
import importlib
import sys
from importlib import metadata
from pathlib import Path
from types import FunctionType
from typing import Any

from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer, PycodeError

ROOT = Path(__file__).resolve().parent.parent
# Document the work tree's package even when another copy is installed.
sys.path.insert(0, str(ROOT / "src"))

project = "plait"
author = "The plait developers"
copyright = "the plait developers"
release = metadata.version("plait")
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# -- autodoc and napoleon ---------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
autodoc_default_options = {"members": True}
python_use_unqualified_type_names = True
toc_object_entries_show_parents = "hide"

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_rtype = False

# -- HTML -------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"plait {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
pygments_style = "friendly"
pygments_dark_style = "monokai"

# -- docstrings of re-exported type aliases -------------------------------------------------
#
# A type alias (``Handler = Callable[...]``) has no ``__doc__`` of its own: its docstring
# is the string literal after the assignment, which autodoc reads from the source of the
# module it is asked about. The public modules only re-export (``from ._x import Y as
# Y``), so for ``plait.Handler`` autodoc would find nothing there and fall back to the
# docstring of a ``typing`` class. This hook looks the alias up in the private module
# that defines it instead.

PUBLIC_MODULES = ("plait", "plait.types", "plait.channels", "plait.testing")


def _defining_modules(module: str) -> dict[str, str]:
    """``{public name: defining module}`` from a module's ``from ._x import Y as Y``."""
    path = ROOT / "src" / Path(*module.split("."))
    if (path / "__init__.py").exists():
        source, package = path / "__init__.py", module
    else:
        source, package = path.with_suffix(".py"), module.rpartition(".")[0]
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level > 0 and node.module:
            parts = package.split(".")
            base = parts[: len(parts) - (node.level - 1)]
            for alias in node.names:
                found[alias.asname or alias.name] = ".".join([*base, node.module])
    return found


_DEFINED_IN = {
    f"{package}.{name}": module
    for package in PUBLIC_MODULES
    for name, module in _defining_modules(package).items()
}


# -- re-exported classes and functions, read from their own modules -----------------------
#
# The public modules set the ``__module__`` of what they re-export to themselves
# (``plait.App``, not ``plait._app.App``). autodoc reads ``__module__`` to find the
# source it analyses for attribute docstrings, fields and the order of members, so for
# the build each gets back the module that defines it.


def _source_module(module: str, name: str) -> str:
    """The module that defines ``name``, following re-exports from ``module`` on."""
    found = _defining_modules(module).get(name)
    return module if found is None else _source_module(found, name)


for _public in _DEFINED_IN:
    _package, _, _name = _public.rpartition(".")
    _value = getattr(importlib.import_module(_package), _name)
    if isinstance(_value, type | FunctionType) and _value.__module__ == _package:
        _value.__module__ = _source_module(_package, _name)


def _alias_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what != "data" or name not in _DEFINED_IN:
        return
    module = _DEFINED_IN[name]
    try:
        docs = ModuleAnalyzer.for_module(module).find_attr_docs()
    except PycodeError:
        return
    found = docs.get(("", name.rpartition(".")[2]))
    if found:
        lines[:] = list(found)


# -- no types in attribute docstrings ------------------------------------------------------
#
# napoleon reads the first line of an attribute's or a property's docstring as
# ``type: description`` when it has a colon, so "The scheme: ``ws`` or ``wss``" would
# come out as the type "The scheme". House style never puts types in docstrings (they
# come from the annotations), so that reading is undone: this runs after napoleon
# (priority above its default 500) and puts the text back in front of the description.

_TYPE_FIELD = ":type: "


def _no_inline_attribute_type(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what not in ("attribute", "property", "data") or len(lines) < 2:
        return
    if not lines[-1].startswith(_TYPE_FIELD) or lines[-2].strip():
        return
    head = lines[-1][len(_TYPE_FIELD) :]
    del lines[-2:]
    for index, line in enumerate(lines):
        if line.strip():
            lines[index] = f"{head}: {line}"
            return
    lines.insert(0, head)


# -- protocols have no constructor ------------------------------------------------------------
#
# A ``typing.Protocol`` is implemented, not instantiated; autodoc would show the
# ``(*args, **kwargs)`` that ``Protocol`` gives every subclass.


def _protocol_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str | None] | None:
    if what == "class" and getattr(obj, "_is_protocol", False):
        return "", return_annotation
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", _alias_docstring)
    app.connect("autodoc-process-docstring", _no_inline_attribute_type, priority=600)
    app.connect("autodoc-process-signature", _protocol_signature)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
