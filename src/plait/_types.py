"""ASGI type aliases shared by plait's modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

Scope: TypeAlias = MutableMapping[str, Any]
"""An ASGI connection scope."""

Message: TypeAlias = MutableMapping[str, Any]
"""An ASGI event message."""

Receive: TypeAlias = Callable[[], Awaitable[Message]]
"""The ASGI ``receive`` callable."""

Send: TypeAlias = Callable[[Message], Awaitable[None]]
"""The ASGI ``send`` callable."""

ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""
