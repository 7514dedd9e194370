"""plait: a structured-concurrency WebSocket toolkit for ASGI, on asyncio and trio.

::

    import plait

    @plait.websocket("/echo")
    async def echo(ws: plait.WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():  # ends when the client disconnects
            await ws.send_text(text)

    app = plait.App(routes=[echo])  # hypercorn -k trio module:app

Every connection is one task group: a reader task (the only caller of ASGI
``receive``), a writer that owns the outbound queue (an idle writer lets a sender make
the ``send`` itself) and the handler, joined by bounded channels. When the peer goes,
the handler first gets what the peer sent before leaving, then it and everything it
started are cancelled. The guide and the reference: ``nox -s docs`` builds them from
the repository's ``docs/``; the README starts there too.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version
from types import FunctionType as _FunctionType

from ._app import App as App
from ._class_listener import Listener as Listener
from ._connection import ConnectionOptions as ConnectionOptions
from ._connection import ConnectionStatistics as ConnectionStatistics
from ._connection import Handler as Handler
from ._connection import Heartbeat as Heartbeat
from ._datastructures import URL as URL
from ._datastructures import Address as Address
from ._datastructures import State as State
from ._denial import DenialResponse as DenialResponse
from ._exceptions import MessageDecodeError as MessageDecodeError
from ._exceptions import MessageTypeError as MessageTypeError
from ._exceptions import PlaitError as PlaitError
from ._exceptions import WebSocketClosed as WebSocketClosed
from ._exceptions import WebSocketDisconnect as WebSocketDisconnect
from ._exceptions import WebSocketStateError as WebSocketStateError
from ._injection import InjectionError as InjectionError
from ._limits import OnExceed as OnExceed
from ._limits import RateLimit as RateLimit
from ._listeners import InvalidMessagePolicy as InvalidMessagePolicy
from ._listeners import OnReceive as OnReceive
from ._options import StallPolicy as StallPolicy
from ._origins import SAME_ORIGIN as SAME_ORIGIN
from ._params import AsyncResource as AsyncResource
from ._params import Cookie as Cookie
from ._params import Deny as Deny
from ._params import Header as Header
from ._params import Ignore as Ignore
from ._params import Path as Path
from ._params import Query as Query
from ._params import use as use
from ._paths import RouteConflictError as RouteConflictError
from ._routing import WebSocketRoute as WebSocketRoute
from ._routing import listener as listener
from ._routing import stream as stream
from ._routing import websocket as websocket
from ._serve import serve_connection as serve_connection
from ._state import WebSocketState as WebSocketState
from ._websocket import WebSocket as WebSocket
from .channels import Hub as Hub

__all__ = (
    "SAME_ORIGIN",
    "URL",
    "Address",
    "App",
    "AsyncResource",
    "ConnectionOptions",
    "ConnectionStatistics",
    "Cookie",
    "DenialResponse",
    "Deny",
    "Handler",
    "Header",
    "Heartbeat",
    "Hub",
    "Ignore",
    "InjectionError",
    "InvalidMessagePolicy",
    "Listener",
    "MessageDecodeError",
    "MessageTypeError",
    "OnExceed",
    "OnReceive",
    "Path",
    "PlaitError",
    "Query",
    "RateLimit",
    "RouteConflictError",
    "StallPolicy",
    "State",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketDisconnect",
    "WebSocketRoute",
    "WebSocketState",
    "WebSocketStateError",
    "listener",
    "serve_connection",
    "stream",
    "use",
    "websocket",
)

# Public classes and functions report the path users import them from (``plait.App``,
# not ``plait._app.App``) in reprs, tracebacks, pickles and the reference. Not where
# that breaks ``typing.get_type_hints``, which reads a class's string annotations in the
# module its ``__module__`` names: these two annotate with names only their own module
# has (and a subclass of Listener would inherit the failure).
_KEEP_MODULE = ("URL", "Listener")
for _name in __all__:
    _value = globals()[_name]
    if (
        isinstance(_value, type | _FunctionType)
        and _value.__module__.startswith(f"{__name__}._")
        and _name not in _KEEP_MODULE
    ):
        _value.__module__ = __name__
del _name, _value

try:
    __version__: str = _version("plait")
    """The installed version of plait."""
except _PackageNotFoundError:  # pragma: no cover - run from a source tree, not installed
    __version__ = "0+unknown"
