"""ASGI type aliases, for annotating raw ASGI apps that use :class:`plait.WebSocket`."""

from ._types import ASGIApp as ASGIApp
from ._types import Message as Message
from ._types import Receive as Receive
from ._types import Scope as Scope
from ._types import Send as Send

__all__ = ("ASGIApp", "Message", "Receive", "Scope", "Send")
