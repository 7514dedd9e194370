"""Running another ASGI app's lifespan from inside ours (the App's HTTP fallback)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from ._exceptions import PlaitError
from ._types import ASGIApp, Message, Scope

__all__ = ("LifespanFailed", "fallback_lifespan")

logger = logging.getLogger(__name__)


class LifespanFailed(PlaitError):
    """A lifespan startup or shutdown failed; the message says which and why."""


@asynccontextmanager
async def fallback_lifespan(
    app: ASGIApp, scope: Scope, answer_within: float
) -> AsyncIterator[None]:
    """Start ``app``'s lifespan on entering and shut it down on leaving.

    An app that raises or returns before answering the startup does not support the
    lifespan protocol, which ASGI allows: nothing more is asked of it.

    Raises:
        LifespanFailed: The app reported ``lifespan.startup.failed`` or
            ``lifespan.shutdown.failed``, or did not answer within ``answer_within`` s.
    """
    to_app, app_inbox = anyio.create_memory_object_stream[Message](2)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](2)

    async def run() -> None:
        async with app_inbox, app_outbox:
            try:
                await app(scope, app_inbox.receive, app_outbox.send)
            except Exception as exc:
                logger.debug("the fallback app does not run the lifespan: %r", exc)

    async def ask(message_type: str) -> Message | None:
        with anyio.fail_after(answer_within):
            try:
                # An app that raises at once can be gone before the message is delivered.
                await to_app.send({"type": message_type})
                return await from_app.receive()
            except (anyio.BrokenResourceError, anyio.EndOfStream):
                return None  # the app returned: no lifespan support

    async with anyio.create_task_group() as task_group, to_app, from_app:
        task_group.start_soon(run)
        reply = await ask("lifespan.startup")
        if reply is not None and reply["type"] == "lifespan.startup.failed":
            raise LifespanFailed(f"the fallback app's startup failed: {reply.get('message', '')}")
        try:
            yield
        finally:
            if reply is not None:
                with anyio.CancelScope(shield=True):
                    reply = await ask("lifespan.shutdown")
            task_group.cancel_scope.cancel()
        if reply is not None and reply["type"] == "lifespan.shutdown.failed":
            raise LifespanFailed(f"the fallback app's shutdown failed: {reply.get('message', '')}")
