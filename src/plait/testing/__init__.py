"""Tools for testing WebSocket applications: in-process test clients and a real server.

:class:`AsyncTestClient` drives an ASGI application in-process from async tests on asyncio
or trio; :class:`TestClient` does the same from synchronous code; :func:`run_hypercorn`
serves an application with hypercorn on loopback for tests with real clients.
"""

from ._client import AsyncTestClient as AsyncTestClient
from ._client import WebSocketDenied as WebSocketDenied
from ._lifespan import LifespanError as LifespanError
from ._server import HypercornServer as HypercornServer
from ._server import run_hypercorn as run_hypercorn
from ._session import AsyncWebSocketTestSession as AsyncWebSocketTestSession
from ._sync import TestClient as TestClient
from ._sync import WebSocketTestSession as WebSocketTestSession

__all__ = (
    "AsyncTestClient",
    "AsyncWebSocketTestSession",
    "HypercornServer",
    "LifespanError",
    "TestClient",
    "WebSocketDenied",
    "WebSocketTestSession",
    "run_hypercorn",
)
