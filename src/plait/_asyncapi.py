"""AsyncAPI 3.0 documents for an App's WebSocket routes.

Everything comes from what the routes already planned, read through each route's
``describe()`` (a :class:`RouteDescription`): the path template, the handshake
parameters and their types, the listener's ``data`` and return annotations, each
stream's yield type, the heartbeat, the subprotocols. Schemas come from msgspec
(:func:`msgspec.json.schema_components`) and are shared through ``components``; nothing
is written by hand. :doc:`/reference/asyncapi` lists the mapping.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import msgspec

from ._injection import Parameter
from ._markup import commonmark

if TYPE_CHECKING:
    from ._options import ConnectionOptions
    from ._routing import RouteDescription, WebSocketRoute

__all__ = ("build_document",)

ASYNCAPI_VERSION: Final = "3.0.0"
WS_BINDING_VERSION: Final = "0.1.0"
_REF: Final = "#/components/schemas/{name}"
_PARAM: Final = re.compile(r"{([^{}:]*)(?::([^{}]*))?}")
_KEY: Final = re.compile(r"[^\w.\-]+")
_PATH_WORDS: Final = {
    "str": "one path segment",
    "int": "an integer",
    "float": "a number",
    "uuid": "a UUID",
    "path": "the rest of the path, slashes included",
}


def build_document(
    routes: Iterable[WebSocketRoute],
    options: ConnectionOptions,
    *,
    title: str,
    version: str,
    description: str | None = None,
    servers: Mapping[str, str] | Iterable[str] = (),
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document describing ``routes``, as plain JSON data.

    Args:
        routes: The App's WebSocket routes.
        options: The App's connection options (the heartbeat routes inherit).
        title: ``info.title``.
        version: ``info.version``: the application's version, not AsyncAPI's.
        description: ``info.description``.
        servers: Where the application runs: WebSocket URLs (``"wss://example.com"``),
            or a mapping of server names to them.
    """
    schemas = _Schemas()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for route in [each.describe(options) for each in routes]:
        name = _KEY.sub("_", _address(route).strip("/")).strip("_")
        channel_id = _unique(name or "root", channels)
        channel, channel_operations = _describe_route(route, channel_id, schemas)
        channels[channel_id] = channel
        operations.update(channel_operations)
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    document: dict[str, Any] = {"asyncapi": ASYNCAPI_VERSION, "info": info}
    if servers:
        document["servers"] = _servers(servers)
    document["defaultContentType"] = "application/json"
    document["channels"] = channels
    document["operations"] = operations
    components = schemas.resolve()
    if components:
        document["components"] = {"schemas": components}
    return document


# -- one route -------------------------------------------------------------------------------


@dataclass
class _Channel:
    """What one route's channel gathers while it is described."""

    id: str
    messages: dict[str, Any] = field(default_factory=dict)
    operations: dict[str, Any] = field(default_factory=dict)

    def message(self, key: str, message: dict[str, Any]) -> dict[str, str]:
        key = _unique(key, self.messages.keys())
        self.messages[key] = message
        return {"$ref": f"#/channels/{self.id}/messages/{key}"}

    def operation(
        self, action: str, name: str, messages: list[dict[str, str]], **more: Any
    ) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{self.id}"},
            "messages": messages,
            **more,
        }
        self.operations[_unique(f"{self.id}.{action}.{name}", self.operations.keys())] = operation
        return operation


def _describe_route(
    route: RouteDescription, channel_id: str, schemas: _Schemas
) -> tuple[dict[str, Any], dict[str, Any]]:
    channel = _Channel(channel_id)
    options = route.options
    listener = route.listener
    if listener is not None:
        name = _func_name(route.listener_class or listener.plan.func)
        incoming = channel.message(
            name, _message(name, listener.data_type, schemas, listener.plan.func)
        )
        more: dict[str, Any] = {"summary": _summary(listener.plan.func)}
        if listener.reply_type is not type(None):
            reply = channel.message(
                f"{name}Reply", _message(f"{name}Reply", listener.reply_type, schemas, None)
            )
            more["reply"] = {"channel": {"$ref": f"#/channels/{channel_id}"}, "messages": [reply]}
        channel.operation("receive", name, [incoming], **_compact(more))
    for spec in route.streams:
        item: Any = spec.item_type
        message = _message(spec.name, item, schemas, spec.plan.func)
        if route.tag_streams:
            message["payload"] = {
                "type": "object",
                "properties": {"stream": {"const": spec.name}, "data": message["payload"]},
                "required": ["stream", "data"],
            }
            message["contentType"] = "application/json"
        summary = _summary(spec.plan.func)
        channel.operation(
            "send",
            spec.name,
            [channel.message(spec.name, message)],
            **_compact({"summary": summary}),
        )
    if listener is None and route.streams and route.on_receive == "stream":
        incoming = channel.message("incoming", {"name": "incoming", "payload": {}})
        channel.operation("receive", "incoming", [incoming], summary="Read by the streams.")
    if route.handler is not None:
        _declared(route, channel, schemas)
    if options.heartbeat is not None:
        beat = options.heartbeat
        ping = channel.message("ping", _text_message("ping", beat.ping))
        pong = channel.message("pong", _text_message("pong", beat.pong))
        every = f"every {beat.interval:g} s"
        channel.operation("send", "ping", [ping], summary=f"The heartbeat, {every}.")
        channel.operation(
            "receive",
            "pong",
            [pong],
            summary=f"The client's answer; silence for {beat.timeout:g} s after a ping closes "
            "with 1001.",
        )
    return _channel_object(route, channel, schemas), channel.operations


def _channel_object(
    route: RouteDescription, channel: _Channel, schemas: _Schemas
) -> dict[str, Any]:
    options = route.options
    result: dict[str, Any] = {"address": _address(route)}
    summary = _summary(_main_func(route))
    if summary:
        result["summary"] = summary
    if channel.messages:
        result["messages"] = channel.messages
    by_source: dict[str, list[Parameter]] = {}
    for parameter in route.request_parameters:
        by_source.setdefault(parameter.kind, []).append(parameter)
    kinds = {match.group(1): match.group(2) or "str" for match in _PARAM.finditer(route.path)}
    path_parameters = {p.key: p for p in by_source.get("path", [])}
    if kinds:
        result["parameters"] = {
            name: _path_parameter(kinds[name], path_parameters.get(name)) for name in kinds
        }
    binding: dict[str, Any] = {"method": "GET"}
    query = _object_schema(by_source.get("query", []), schemas)
    if query is not None:
        if "since" in query["properties"]:
            query["properties"]["since"].setdefault(
                "description",
                "Resume: the id of the last channel message seen; what was missed comes first.",
            )
        binding["query"] = query
    headers = _object_schema(by_source.get("header", []), schemas) or {
        "type": "object",
        "properties": {},
    }
    if route.subprotocols:
        headers["properties"]["sec-websocket-protocol"] = {
            "type": "string",
            "description": "The subprotocols the client offers; the first of "
            + ", ".join(route.subprotocols)
            + " that it offers is chosen.",
        }
    if headers["properties"]:
        binding["headers"] = headers
    binding["bindingVersion"] = WS_BINDING_VERSION
    result["bindings"] = {"ws": binding}
    cookies = _object_schema(by_source.get("cookie", []), schemas)
    if cookies is not None:
        result["x-plait-cookies"] = cookies
    if route.subprotocols:
        result["x-plait-subprotocols"] = list(route.subprotocols)
    if options.heartbeat is not None:
        beat = options.heartbeat
        result["x-plait-heartbeat"] = {
            "interval": beat.interval,
            "timeout": beat.timeout,
            "ping": beat.ping,
            "pong": beat.pong,
        }
    if options.idle_timeout is not None:
        result["x-plait-idle-timeout"] = options.idle_timeout
    if options.rate_limit is not None:
        limit = options.rate_limit
        result["x-plait-rate-limit"] = {
            "messages": limit.messages,
            "per": limit.per,
            "burst": limit.capacity,
            "onExceed": limit.on_exceed,
        }
    if route.max_connections is not None:
        result["x-plait-max-connections"] = route.max_connections
    if query is not None and "since" in query["properties"]:
        result["x-plait-resume"] = {"query": "since"}
    if route.tag_streams:
        result["x-plait-tagged-streams"] = [spec.name for spec in route.streams]
    return result


def _declared(route: RouteDescription, channel: _Channel, schemas: _Schemas) -> None:
    """A low-level handler's messages, as its route declared them (``receives=``,
    ``sends=``)."""
    name = _func_name(route.handler)
    if route.receives is not None:
        message = channel.message(name, _message(name, route.receives, schemas, None))
        channel.operation("receive", name, [message])
    if route.sends is not None:
        key = f"{name}Sends"
        message = channel.message(key, _message(key, route.sends, schemas, None))
        channel.operation("send", name, [message])


def _path_parameter(kind: str, parameter: Parameter | None) -> dict[str, Any]:
    result: dict[str, Any] = {"description": f"{_PATH_WORDS.get(kind, kind)}."}
    choices = _choices(parameter.annotation) if parameter is not None else []
    if choices:
        result["enum"] = [str(choice) for choice in choices]
    return result


def _object_schema(parameters: list[Parameter], schemas: _Schemas) -> dict[str, Any] | None:
    if not parameters:
        return None
    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in parameters:
        schema = schemas.add(parameter.annotation)  # filled in later: keep the object
        if parameter.default is not _EMPTY:
            with contextlib.suppress(TypeError, msgspec.EncodeError):  # not JSON: left out
                schema["default"] = msgspec.to_builtins(parameter.default)
        else:
            required.append(parameter.key)
        properties[parameter.key] = schema
    result: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    return result


_EMPTY: Final = Parameter.__dataclass_fields__["default"].default


def _message(name: str, annotation: Any, schemas: _Schemas, func: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"name": name}
    summary = _summary(func) if func is not None else None
    if summary:
        message["summary"] = summary
    members = [m for m in _members(annotation) if m is not type(None)]
    if members == [str]:
        message["contentType"] = "text/plain"
    elif members == [bytes]:
        message["contentType"] = "application/octet-stream"
    message["payload"] = schemas.add(annotation)
    return message


def _text_message(name: str, text: str) -> dict[str, Any]:
    return {"name": name, "contentType": "text/plain", "payload": {"type": "string", "const": text}}


# -- schemas -----------------------------------------------------------------------------------


class _Schemas:
    """Types to schemas: placeholders while routes are described, filled in at the end
    from one ``schema_components`` call, so that named types are defined once."""

    def __init__(self) -> None:
        self._types: list[Any] = []
        self._placeholders: list[dict[str, Any]] = []

    def add(self, annotation: Any) -> dict[str, Any]:
        """A schema object for ``annotation``, filled in by :meth:`resolve`."""
        placeholder: dict[str, Any] = {}
        self._types.append(annotation)
        self._placeholders.append(placeholder)
        return placeholder

    def resolve(self) -> dict[str, Any]:
        """Fill every placeholder; return ``components.schemas``."""
        leaves: list[Any] = []
        for annotation in self._types:
            leaves.extend(_leaves(annotation))
        wanted = [leaf for leaf in dict.fromkeys(map(_Hashable, leaves)) if leaf.schemable]
        found, components = msgspec.json.schema_components(
            [leaf.annotation for leaf in wanted], ref_template=_REF
        )
        by_leaf = dict(zip(wanted, found, strict=True))
        for annotation, placeholder in zip(self._types, self._placeholders, strict=True):
            placeholder.update(_for_asyncapi(_schema_of(annotation, by_leaf)))
        return {name: _for_asyncapi(schema) for name, schema in sorted(components.items())}


@dataclass(frozen=True)
class _Hashable:
    """An annotation as a dict key (by equality, or identity when unhashable)."""

    annotation: Any

    def __hash__(self) -> int:
        try:
            return hash(self.annotation)
        except TypeError:
            return id(self.annotation)

    @property
    def schemable(self) -> bool:
        if self.annotation in (str, bytes, Any):
            return False
        try:
            msgspec.json.schema(self.annotation)
        except (TypeError, ValueError):
            return False
        return True


def _leaves(annotation: Any) -> list[Any]:
    """The annotation itself where msgspec can describe it; its union's members if not."""
    if _Hashable(annotation).schemable or annotation in (str, bytes, Any):
        return [annotation]
    members = _members(annotation)
    return members if len(members) > 1 else [annotation]


def _schema_of(annotation: Any, by_leaf: Mapping[_Hashable, Any]) -> dict[str, Any]:
    if annotation is str:
        return {"type": "string"}
    if annotation is bytes:
        return {"type": "string", "format": "binary"}
    if annotation is Any:
        return {}
    leaf = _Hashable(annotation)
    if leaf in by_leaf:
        return dict(by_leaf[leaf])
    members = _members(annotation)
    if len(members) > 1:
        return {"anyOf": [_schema_of(member, by_leaf) for member in members]}
    return {"description": f"no JSON schema for {annotation!r}"}


def _for_asyncapi(schema: Any) -> Any:
    """msgspec's JSON Schema (2020-12) as an AsyncAPI Schema Object: a tagged union's
    ``anyOf`` becomes ``oneOf``, its ``discriminator`` the property's name (AsyncAPI's
    form, not OpenAPI's), and a tuple's ``prefixItems`` draft 7's ``items`` list."""
    if isinstance(schema, list):
        return [_for_asyncapi(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: _for_asyncapi(value) for key, value in schema.items()}
    if isinstance(result.get("description"), str):
        # A docstring: reST's inline markup as CommonMark, which descriptions are.
        result["description"] = commonmark(inspect.cleandoc(result["description"]))
    discriminator = result.get("discriminator")
    if isinstance(discriminator, dict):
        result["discriminator"] = discriminator["propertyName"]
        if "anyOf" in result:
            result["oneOf"] = result.pop("anyOf")
    if "prefixItems" in result:
        result["items"] = result.pop("prefixItems")
        result.setdefault("additionalItems", False)
    return result


def _members(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def _choices(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _choices(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return list(typing.get_args(annotation))
    import enum

    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [member.value for member in annotation]
    return []


# -- names and the rest ------------------------------------------------------------------------


def _servers(servers: Mapping[str, str] | Iterable[str]) -> dict[str, Any]:
    named = (
        dict(servers)
        if isinstance(servers, Mapping)
        else {f"server{n}" if n else "default": url for n, url in enumerate(servers)}
    )
    result: dict[str, Any] = {}
    for name, url in named.items():
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError(f"a server is a ws:// or wss:// URL, not {url!r}")
        server: dict[str, Any] = {"host": parts.netloc, "protocol": parts.scheme}
        if parts.path not in ("", "/"):
            server["pathname"] = parts.path
        result[_KEY.sub("_", name)] = server
    return result


def _address(route: RouteDescription) -> str:
    """The route's path with its parameters as ``{name}`` (converters are not AsyncAPI)."""
    return _PARAM.sub(lambda match: "{" + match.group(1) + "}", route.path)


def _main_func(route: RouteDescription) -> Any:
    if route.listener_class is not None:
        return route.listener_class
    if route.listener is not None:
        return route.listener.plan.func
    if route.streams:
        return route.streams[0].plan.func
    return route.handler


def _func_name(func: Any) -> str:
    return _KEY.sub("_", getattr(func, "__name__", "handler"))


def _summary(func: Any) -> str | None:
    doc = getattr(func, "__doc__", None)
    if not doc:
        return None
    first = doc.strip().split("\n\n")[0]
    return commonmark(" ".join(first.split()))  # reST's ``x`` as `x`


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _unique(key: str, taken: Iterable[str]) -> str:
    """``key``, or ``key2``, ``key3``... when it is taken."""
    existing = set(taken)
    candidate, n = key, 2
    while candidate in existing:
        candidate, n = f"{key}{n}", n + 1
    return candidate
