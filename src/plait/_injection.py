"""Parameter injection: planned once per handler, resolved once per connection.

Planning reads a function's signature and decides where each parameter comes from
(the WebSocket, the path, the query string, a header, a cookie, or a dependency whose
factory is planned the same way), checking the dependency graph for cycles. Resolving
reads the handshake, converts every value through msgspec, reports every failing
parameter at once, then calls the factories in dependency order, entering generator
factories into an exit stack whose teardowns run when the connection ends.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import anyio

from ._codec import ConversionError, convert
from ._exceptions import PlaitError
from ._params import Dependency, Source
from ._websocket import WebSocket

__all__ = ("InvalidParameters", "Plan", "Resolver", "plan_callable", "request_parameters")

_EMPTY = inspect.Parameter.empty
_MANY_ORIGINS = (list, tuple, set, frozenset, Sequence)
FactoryKind = Literal["function", "coroutine", "generator", "async_generator"]


class InjectionError(PlaitError, TypeError):
    """A handler or dependency cannot be injected (found when the route is built)."""


class InvalidParameters(PlaitError):
    """The handshake's parameters did not fit the handler: the client gets a 400.

    Attributes:
        errors: One entry per failing parameter: ``source``, ``name`` and ``message``.
    """

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(errors)
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Parameter:
    """Where one parameter's value comes from."""

    name: str
    kind: Literal["websocket", "path", "query", "header", "cookie", "dependency", "provided"]
    key: str = ""
    annotation: Any = Any
    default: Any = _EMPTY
    many: bool = False
    dependency: Plan | None = None
    reuse: bool = True

    @property
    def identity(self) -> tuple[str, str, Any, bool]:
        """What makes two handshake parameters the same value (read and converted once)."""
        return (self.kind, self.key, self.annotation, self.many)


@dataclass(slots=True)
class Plan:
    """How to call one function: its parameters and what kind of function it is."""

    func: Callable[..., Any]
    kind: FactoryKind
    parameters: list[Parameter] = field(default_factory=list)

    def request_parameters(self) -> list[Parameter]:
        """Every handshake-derived parameter in this plan and its dependencies, once."""
        return request_parameters([self])


def request_parameters(plans: Iterable[Plan | None]) -> list[Parameter]:
    """Every handshake-derived parameter of these plans and their dependencies, once
    (plans that share a dependency share its parameters)."""
    found: dict[tuple[str, str, Any, bool], Parameter] = {}
    stack = [plan for plan in plans if plan is not None]
    while stack:
        plan = stack.pop()
        for parameter in plan.parameters:
            if parameter.dependency is not None:
                stack.append(parameter.dependency)
            elif parameter.kind not in ("websocket", "dependency", "provided"):
                found.setdefault(parameter.identity, parameter)
    return list(found.values())


def plan_callable(
    func: Callable[..., Any],
    path_params: Sequence[str],
    dependencies: Mapping[str, Any] | None = None,
    *,
    namespace: Mapping[str, Any] | None = None,
    skip: Collection[str] = (),
    _chain: tuple[Callable[..., Any], ...] = (),
) -> Plan:
    """Plan how to call ``func`` for a connection.

    Args:
        func: The handler or dependency factory.
        path_params: The names the route's path template defines.
        dependencies: Litestar-style ``{"name": factory}`` for parameters by name.
        namespace: Names visible where the handler was defined (the decorator's caller),
            so that string annotations (``from __future__ import annotations``) naming
            local factories and types resolve.
        skip: Parameters the caller passes itself (a listener's ``data``, ``self``).

    Raises:
        InjectionError: A parameter cannot be injected, or dependencies form a cycle.
    """
    if func in _chain:
        cycle = " -> ".join(_name(f) for f in (*_chain, func))
        raise InjectionError(f"dependency cycle: {cycle}")
    chain = (*_chain, func)
    try:
        hints = typing.get_type_hints(
            func, localns=dict(namespace) if namespace else None, include_extras=True
        )
    except Exception as exc:
        raise InjectionError(f"cannot read the annotations of {_name(func)}: {exc}") from exc
    plan = Plan(func, _kind_of(func))
    for parameter in inspect.signature(func).parameters.values():
        if parameter.name in skip:
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise InjectionError(f"{_name(func)}: *{parameter.name} cannot be injected")
        annotation = hints.get(parameter.name, Any)
        named = (dependencies or {}).get(parameter.name)
        plan.parameters.append(
            _plan_parameter(
                parameter, annotation, named, path_params, dependencies, namespace, chain
            )
        )
    return plan


def _plan_parameter(
    parameter: inspect.Parameter,
    annotation: Any,
    named: Any,
    path_params: Sequence[str],
    dependencies: Mapping[str, Any] | None,
    namespace: Mapping[str, Any] | None,
    chain: tuple[Callable[..., Any], ...],
) -> Parameter:
    name, default = parameter.name, parameter.default
    base: Any = annotation
    markers: tuple[Any, ...] = ()
    if typing.get_origin(annotation) is Annotated:
        base, *rest = typing.get_args(annotation)
        markers = tuple(rest)
    if named is not None:
        markers = (*markers, named if isinstance(named, Dependency) else Dependency(named))
    for marker in markers:
        if isinstance(marker, Dependency):
            sub = plan_callable(
                marker.factory, path_params, dependencies, namespace=namespace, _chain=chain
            )
            return Parameter(
                name,
                "dependency",
                annotation=base,
                dependency=sub,
                reuse=marker.reuse,
                default=default,
            )
    provided = getattr(base, "__plait_provided__", None)
    if isinstance(provided, str):
        return Parameter(name, "provided", key=provided, annotation=base)
    if (isinstance(base, type) and issubclass(base, WebSocket)) or (
        base is Any and name in ("socket", "websocket")  # Litestar injects these by name
    ):
        return Parameter(name, "websocket")
    source = next((m for m in markers if isinstance(m, Source)), None)
    if source is None:
        source = Source("path" if name in path_params else "query")
    key = source.alias or (name.replace("_", "-") if source.kind == "header" else name)
    if source.kind == "path" and key not in path_params:
        raise InjectionError(f"{_name(chain[-1])}: the path has no parameter {key!r}")
    many = typing.get_origin(_without_none(base)) in _MANY_ORIGINS
    # Keep the metadata that is not plait's (msgspec.Meta(ge=...), ...): it validates.
    constraints = tuple(m for m in markers if not isinstance(m, Source | Dependency))
    target = Annotated[(base, *constraints)] if constraints else base
    return Parameter(name, source.kind, key=key, annotation=target, default=default, many=many)


def _without_none(annotation: Any) -> Any:
    """``T`` for ``T | None`` (and ``Optional[T]``); the annotation itself otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        others = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(others) == 1:
            return others[0]
    return annotation


def _kind_of(func: Callable[..., Any]) -> FactoryKind:
    if inspect.isasyncgenfunction(func):
        return "async_generator"
    if inspect.isgeneratorfunction(func):
        return "generator"
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an instance with async __call__
    ):
        return "coroutine"
    return "function"


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", repr(func))


class Resolver:
    """Resolves plans for one connection; owns the generator teardowns.

    Args:
        websocket: The connection.
        stack: Where generator factories are entered; closing it tears them down.
        provided: The values the App provides, by key (``{"hub": hub}``): a parameter
            annotated with a type whose ``__plait_provided__`` names a key gets its value.
    """

    def __init__(
        self,
        websocket: WebSocket,
        stack: AsyncExitStack,
        provided: Mapping[str, Any] | None = None,
    ) -> None:
        self._websocket = websocket
        self._stack = stack
        self._provided: Mapping[str, Any] = provided or {}
        self._values: dict[tuple[str, str, Any, bool], Any] = {}
        self._reused: dict[Callable[..., Any], Any] = {}

    def read_handshake(self, parameters: list[Parameter]) -> None:
        """Read and convert every handshake parameter, collecting every failure.

        Raises:
            InvalidParameters: One or more parameters are missing or do not convert.
        """
        errors: list[dict[str, str]] = []
        ws = self._websocket
        for parameter in parameters:
            kind, key = parameter.kind, parameter.key
            raw: Any
            if kind == "path":
                raw = ws.path_params.get(key, _EMPTY)
            elif kind == "query":
                raw = (
                    ws.query_params.getall(key, [])
                    if parameter.many
                    else ws.query_params.get(key, _EMPTY)
                )
            elif kind == "header":
                raw = ws.headers.getall(key, []) if parameter.many else ws.headers.get(key, _EMPTY)
            else:
                raw = ws.cookies.get(key, _EMPTY)
            identity = parameter.identity
            if parameter.many and not raw:
                raw = _EMPTY  # no values at all: missing, like any other parameter
            if raw is _EMPTY:
                if parameter.default is _EMPTY:
                    errors.append({"source": kind, "name": key, "message": "missing"})
                else:
                    self._values[identity] = parameter.default
                continue
            try:
                self._values[identity] = convert(raw, parameter.annotation)
            except ConversionError as exc:
                errors.append({"source": kind, "name": key, "message": str(exc)})
        if errors:
            # One entry per failing name, even when two handlers read it as two types.
            unique: dict[tuple[str, str], dict[str, str]] = {}
            for error in errors:
                unique.setdefault((error["source"], error["name"]), error)
            raise InvalidParameters(list(unique.values()))

    async def call(self, plan: Plan) -> Any:
        """Call a plan's function with its resolved arguments; return what it returns.

        Generator factories are entered into the exit stack and their yielded value is
        returned. Call :meth:`read_handshake` with ``plan.request_parameters()`` first.
        """
        kwargs = await self.arguments(plan)
        func = plan.func
        if plan.kind == "coroutine":
            return await func(**kwargs)
        if plan.kind == "async_generator":
            return await self._stack.enter_async_context(asynccontextmanager(func)(**kwargs))
        if plan.kind == "generator":
            return self._stack.enter_context(contextmanager(func)(**kwargs))
        return func(**kwargs)

    async def arguments(self, plan: Plan) -> dict[str, Any]:
        """Resolve a plan's arguments (its dependencies made or reused)."""
        return {p.name: await self._value(p) for p in plan.parameters}

    async def _value(self, parameter: Parameter) -> Any:
        if parameter.kind == "websocket":
            return self._websocket
        if parameter.kind == "provided":
            if parameter.key not in self._provided:
                raise InjectionError(
                    f"nothing provides {parameter.annotation.__qualname__} for the parameter "
                    f"{parameter.name!r}: give it to the App (App({parameter.key}=...))"
                )
            return self._provided[parameter.key]
        plan = parameter.dependency
        if plan is None:
            return self._values[parameter.identity]
        if not parameter.reuse:
            return await self.call(plan)
        if plan.func not in self._reused:
            self._reused[plan.func] = await self.call(plan)
        return self._reused[plan.func]


async def close_shielded(stack: AsyncExitStack, exc: BaseException | None, limit: float) -> None:
    """Run the teardowns even when the connection is being cancelled, within ``limit`` s."""
    with anyio.move_on_after(limit, shield=True):
        if exc is None:
            await stack.aclose()
        else:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
