"""Tools for testing WebSocket applications: in-process test clients and a real server.

:class:`AsyncTestClient` drives an ASGI application in-process from async tests on asyncio
or trio; :class:`TestClient` does the same from synchronous code; :func:`run_hypercorn`
serves an application with hypercorn on loopback for tests with real clients.
"""

from types import FunctionType as _FunctionType

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

# Public classes and functions report the path users import them from (see plait's own
# __init__ for why, and for where that would not be safe).
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type | _FunctionType) and _value.__module__.startswith(f"{__name__}._"):
        _value.__module__ = __name__
del _name, _value
