"""Listeners and streams: the high-level handlers, composed on one socket.

A route may have at most one listener (called once per incoming message, its return
value sent back) and any number of streams (async generators whose items are pushed to
the client). They all run at once in one task group inside the connection's: when the
client leaves, all are cancelled; when one fails, the others are cancelled and the
connection closes with 1011.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Literal, TypeAlias

import anyio

from ._codec import MessageCodec, encode_json_text
from ._engine import listener_tracer
from ._exceptions import MessageDecodeError, WebSocketDisconnect
from ._injection import InjectionError, Plan, Resolver, plan_callable
from ._params import Deny
from ._state import WebSocketState, validate_close
from ._websocket import RoutePort, WebSocket
from .channels._hub import ChannelMessage, encode_message

__all__ = (
    "InvalidMessagePolicy",
    "ListenerSpec",
    "OnReceive",
    "StreamSpec",
    "negotiate_subprotocol",
    "serve_composed",
)

logger = logging.getLogger(__name__)

OnReceive: TypeAlias = Literal["discard", "close", "stream"]
"""What a route with streams and no listener does with incoming messages."""

InvalidMessagePolicy: TypeAlias = (
    Literal["close", "reply"] | Callable[[WebSocket, MessageDecodeError], Awaitable[None]]
)
"""What a listener does with a message that does not decode: ``"close"`` with 1007 and a
reason naming the field, ``"reply"`` with an error message and go on, or call a hook."""


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """A listener, planned: its function, the codec for ``data`` and its policies."""

    plan: Plan
    data: str
    codec: MessageCodec
    on_invalid: InvalidMessagePolicy
    concurrency: int
    data_type: Any = Any
    """What ``data`` is annotated with."""
    reply_type: Any = Any
    """What the listener returns (its return annotation; ``Any`` when it has none)."""

    def bind(
        self, bound: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Callable[[Any], Awaitable[Any]]:
        """The call for one connection: ``data`` in, the reply out. A plain ``def``
        listener runs in a worker thread, as Litestar runs it."""
        func = self.plan.func
        if self.plan.kind == "coroutine":

            async def call(data: Any) -> Any:
                return await func(*bound, data=data, **kwargs)

        else:

            async def call(data: Any) -> Any:
                return await anyio.to_thread.run_sync(partial(func, *bound, data=data, **kwargs))

        return call

    @classmethod
    def build(
        cls,
        func: Callable[..., Any],
        path_params: Sequence[str],
        dependencies: Mapping[str, Any],
        namespace: Mapping[str, Any],
        *,
        mode: str | None,
        on_invalid: InvalidMessagePolicy,
        concurrency: int,
        skip: tuple[str, ...] = (),
    ) -> ListenerSpec:
        """Plan a listener function whose ``data`` parameter receives each message.

        Raises:
            InjectionError: It is a generator function, has no ``data`` parameter, or a
                parameter cannot be injected.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if on_invalid not in ("close", "reply") and not callable(on_invalid):
            raise ValueError("on_invalid must be 'close', 'reply' or an async callable")
        if "data" not in inspect.signature(func).parameters:
            raise InjectionError(f"the listener {func.__qualname__} needs a 'data' parameter")
        hints = typing.get_type_hints(func, localns=dict(namespace), include_extras=True)
        codec = MessageCodec(hints.get("data", Any), mode)
        plan = plan_callable(
            func, path_params, dependencies, namespace=namespace, skip=("data", *skip)
        )
        if plan.kind not in ("coroutine", "function"):
            raise InjectionError(
                f"the listener {func.__qualname__} must be a function (async, or plain to run "
                "in a worker thread), not a generator: a stream is an async generator"
            )
        data_type, reply_type = hints.get("data", Any), hints.get("return", Any)
        return cls(plan, "data", codec, on_invalid, concurrency, data_type, reply_type)


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A stream, planned: an async generator function and how its items are sent."""

    name: str
    plan: Plan
    codec: MessageCodec
    item_type: Any = Any
    """What it yields (from ``AsyncGenerator[T, None]``; ``Any`` when not annotated)."""

    @classmethod
    def build(
        cls,
        func: Callable[..., Any],
        path_params: Sequence[str],
        dependencies: Mapping[str, Any],
        namespace: Mapping[str, Any],
        *,
        name: str | None,
        mode: str | None,
    ) -> StreamSpec:
        """Plan a stream.

        Raises:
            InjectionError: It is not an async generator function, or a parameter cannot
                be injected.
        """
        if not inspect.isasyncgenfunction(func):
            raise InjectionError(
                f"the stream {func.__qualname__} must be an async generator function"
            )
        plan = plan_callable(func, path_params, dependencies, namespace=namespace)
        plan.kind = "function"  # called for its generator, not entered as a dependency
        returns = typing.get_type_hints(func, localns=dict(namespace)).get("return")
        item_type = Any
        if typing.get_origin(returns) in (AsyncGenerator, AsyncIterator, AsyncIterable):
            item_type = (typing.get_args(returns) or (Any,))[0]
        return cls(name or func.__name__, plan, MessageCodec(Any, mode), item_type)


def negotiate_subprotocol(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    """The first subprotocol the client offered that the route supports, or None."""
    return next((choice for choice in offered if choice in supported), None)


async def serve_composed(
    websocket: WebSocket,
    resolver: Resolver,
    *,
    accept: Callable[[], Awaitable[None]],
    listener: ListenerSpec | None,
    listen_call: Callable[[Any], Awaitable[Any]] | None,
    streams: Sequence[StreamSpec],
    tag_streams: bool,
    on_receive: OnReceive,
) -> None:
    """Accept, then run the listener and every stream at once until the client leaves.

    Without a listener the connection ends (with 1000) once every stream has finished;
    incoming messages are discarded meanwhile, close the connection with 1003 when
    ``on_receive="close"``, or are left to the streams with ``on_receive="stream"``.
    Where the route reads, a handler's own read is refused with a clear error: the two
    readers would each miss messages.
    """
    await accept()
    if websocket.application_state is not WebSocketState.CONNECTED:
        return  # the accept handler refused the connection
    # No task group of their own: the streams run in the connection's, whose failure
    # rules are the ones wanted (one fails, all are cancelled, 1011), and the listener
    # runs right here, in the handler's task. Each nested task group would cost every
    # idle connection its tasks, scopes and sets.
    children = websocket.task_group
    port = RoutePort(websocket)
    if listener is not None and listen_call is not None:
        port.claim_reading("its listener takes them: read them as the listener's data")
        for spec in streams:
            children.start_soon(_run_stream, websocket, port, spec, resolver, tag_streams, None)
        await _listen(websocket, port, listener, listen_call)
        return
    if on_receive != "stream":
        port.claim_reading(
            f"on_receive={on_receive!r}: give the route on_receive='stream' to read them in "
            "a stream"
        )
    with anyio.CancelScope() as incoming:
        remaining = _Remaining(len(streams), incoming)
        for spec in streams:
            children.start_soon(
                _run_stream, websocket, port, spec, resolver, tag_streams, remaining
            )
        if streams and on_receive == "stream":
            await anyio.sleep_forever()  # the streams read; the peer leaving cancels them
        elif streams:
            await _refuse_incoming(websocket, port, on_receive)
    # every stream is done (or the client was refused): the connection ends


class _Remaining:
    """Counts the streams still running; the last one to finish ends the route."""

    __slots__ = ("count", "scope")

    def __init__(self, count: int, scope: anyio.CancelScope) -> None:
        self.count = count
        self.scope = scope

    def done(self) -> None:
        self.count -= 1
        if not self.count:
            self.scope.cancel()


async def _run_stream(
    websocket: WebSocket,
    port: RoutePort,
    spec: StreamSpec,
    resolver: Resolver,
    tag: bool,
    remaining: _Remaining | None,
) -> None:
    try:
        await _stream_items(port, spec, resolver, tag)
    except Deny as deny:
        # The client is refused: 1008 with the detail, and the route ends with it.
        logger.info("refused %s from the stream %s: %s", websocket.url.path, spec.name, deny)
        await websocket.close(1008, validate_close(1008, str(deny.detail)))
        websocket.task_group.cancel_scope.cancel()
        return
    if remaining is not None:
        remaining.done()


async def _stream_items(port: RoutePort, spec: StreamSpec, resolver: Resolver, tag: bool) -> None:
    # The generator is made inside its task: a task cancelled before it runs then
    # leaves no unclosed generator behind (trio warns about those).
    generator: AsyncGenerator[Any, None] = await resolver.call(spec.plan)
    async with aclosing(generator):
        async for item in generator:
            message: dict[str, Any] | None
            if tag:
                text = encode_json_text({"stream": spec.name, "data": item})
                message = {"type": "websocket.send", "text": text}
            elif type(item) is ChannelMessage:
                message = spec.codec.frame(encode_message(item))  # once per publish
            else:
                message = spec.codec.encode(item)
            if message is not None:
                await port.send_reply(message)  # dropped once nobody can read it


async def _listen(
    websocket: WebSocket,
    port: RoutePort,
    spec: ListenerSpec,
    call: Callable[[Any], Awaitable[Any]],
) -> None:
    codec = spec.codec
    traced = listener_tracer.get()  # plait.otel: a span per call
    if traced is not None:
        call = traced(call)

    async def handle(data: Any) -> None:
        reply = codec.encode(await call(data))
        if reply is not None:
            await port.send_reply(reply)  # dropped if the peer left meanwhile

    if spec.concurrency == 1:
        # One call at a time, inline: no coroutine of plait's own per message between
        # the engine's receive and the listener.
        receive, send_reply, decode, encode = (
            port.receive_data,
            port.send_reply,
            codec.decode,
            codec.encode,
        )
        while True:
            try:
                message = await receive()
            except WebSocketDisconnect:
                return
            try:
                data = decode(message)
            except MessageDecodeError as exc:
                if spec.on_invalid == "close":
                    raise  # 1007: see _next_data
                await _invalid(websocket, spec.on_invalid, exc)
                continue
            reply = encode(await call(data))
            if reply is not None:
                await send_reply(reply)  # dropped if the peer left meanwhile
    async with anyio.create_task_group() as task_group:
        # A semaphore, not a CapacityLimiter: the receiving task takes every slot and the
        # handling tasks give them back (a limiter's tokens belong to their borrower).
        limiter = anyio.Semaphore(spec.concurrency)
        while (data := await _next_data(websocket, port, spec)) is not _GONE:
            await limiter.acquire()  # at most N at once: the reader waits meanwhile
            port.hold()  # held until handled: a peer that leaves meanwhile waits for it
            task_group.start_soon(_release_after, limiter, port.release, handle, data)


_GONE: Final = object()


async def _next_data(websocket: WebSocket, port: RoutePort, spec: ListenerSpec) -> Any:
    """The next message, decoded (invalid ones get the route's policy), or ``_GONE``
    once the client has left."""
    while True:
        try:
            message = await port.receive_data()
        except WebSocketDisconnect:
            return _GONE
        try:
            return spec.codec.decode(message)
        except MessageDecodeError as exc:
            if spec.on_invalid == "close":
                # The engine closes with 1007 and the reason, as the client's error. A
                # bare raise: a frame holding the error would be held by its traceback.
                raise
            await _invalid(websocket, spec.on_invalid, exc)


async def _release_after(
    limiter: anyio.Semaphore,
    release: Callable[[], None],
    handle: Callable[[Any], Awaitable[None]],
    data: Any,
) -> None:
    try:
        await handle(data)
    finally:
        limiter.release()
        release()


async def _invalid(
    websocket: WebSocket, policy: InvalidMessagePolicy, error: MessageDecodeError
) -> None:
    logger.info("invalid message on %s: %s", websocket.url.path, error)
    if policy == "reply":
        await websocket.send_json({"error": "invalid message", "detail": str(error)})
    elif callable(policy):
        await policy(websocket, error)


async def _refuse_incoming(websocket: WebSocket, port: RoutePort, policy: OnReceive) -> None:
    while True:
        try:
            await port.receive_data()
        except WebSocketDisconnect:
            return
        if policy == "close":
            await websocket.close(1003, "this endpoint does not accept messages")
            return
