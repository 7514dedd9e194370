"""Path templates: ``/rooms/{room}/users/{id:int}`` matched against request paths."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ._exceptions import PlaitError

__all__ = ("CONVERTERS", "PathTemplate", "RouteConflictError")


@dataclass(frozen=True)
class Converter:
    """How one kind of path parameter is matched and converted."""

    regex: str
    convert: Callable[[str], Any]


CONVERTERS: Final[dict[str, Converter]] = {
    "str": Converter(r"[^/]+", str),
    "int": Converter(r"-?[0-9]+", int),
    "float": Converter(r"-?[0-9]+(?:\.[0-9]+)?", float),
    "uuid": Converter(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        uuid.UUID,
    ),
    "path": Converter(r".*", str),
}

_PARAM = re.compile(r"{([^{}:]*)(?::([^{}]*))?}")


class RouteConflictError(PlaitError, ValueError):
    """Two routes match the same paths, or a path template is malformed."""


class PathTemplate:
    """A compiled path template.

    ``{name}`` matches one path segment; ``{name:int}``, ``{name:float}``,
    ``{name:uuid}`` and ``{name:str}`` convert it; ``{name:path}`` matches the rest of the
    path, slashes included. The leading slash is optional.

    Args:
        template: The template, for example ``"/rooms/{room}/users/{id:int}"``.

    Raises:
        RouteConflictError: Unknown converter, repeated name, or malformed braces.
    """

    __slots__ = ("converters", "key", "param_names", "regex", "template")

    def __init__(self, template: str) -> None:
        self.template = "/" + template.lstrip("/")
        pattern = "^"
        key = ""
        position = 0
        self.converters: dict[str, Callable[[str], Any]] = {}
        self.param_names: tuple[str, ...] = ()
        for match in _PARAM.finditer(self.template):
            literal = self.template[position : match.start()]
            if "{" in literal or "}" in literal:
                raise RouteConflictError(f"unbalanced braces in path {template!r}")
            name, kind = match.group(1), match.group(2) or "str"
            if not name.isidentifier():
                raise RouteConflictError(
                    f"path parameter {name!r} in {template!r} is not a valid identifier"
                )
            if name in self.converters:
                raise RouteConflictError(f"path parameter {name!r} repeats in {template!r}")
            converter = CONVERTERS.get(kind)
            if converter is None:
                raise RouteConflictError(
                    f"unknown converter {kind!r} in {template!r}; "
                    f"use one of {', '.join(sorted(CONVERTERS))}"
                )
            pattern += re.escape(literal) + f"(?P<{name}>{converter.regex})"
            key += literal + "{" + kind + "}"
            self.converters[name] = converter.convert
            position = match.end()
        rest = self.template[position:]
        if "{" in rest or "}" in rest:
            raise RouteConflictError(f"unbalanced braces in path {template!r}")
        self.regex = re.compile(pattern + re.escape(rest) + "$")
        self.key = key + rest
        self.param_names = tuple(self.converters)

    def match(self, path: str) -> dict[str, Any] | None:
        """Match ``path``; return the converted parameters, or None."""
        found = self.regex.match(path)
        if found is None:
            return None
        try:
            return {name: convert(found[name]) for name, convert in self.converters.items()}
        except ValueError:  # e.g. an int too large for a float, or a malformed value
            return None

    def __repr__(self) -> str:
        return f"PathTemplate({self.template!r})"
