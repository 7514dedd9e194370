"""Publish/subscribe between connections, and presence: in memory, or across processes
with Redis.

``RedisBackend`` needs the ``redis`` extra (coredis); it is imported on first use, so
the rest of this module works without it.
"""

from types import FunctionType as _FunctionType
from typing import TYPE_CHECKING, Any

from .._exceptions import missing_extra as _missing_extra
from ._backend import Backend as Backend
from ._backend import ChannelUnavailable as ChannelUnavailable
from ._backend import InvalidResume as InvalidResume
from ._hub import ChannelMessage as ChannelMessage
from ._hub import Hub as Hub
from ._hub import Policy as Policy
from ._hub import RecoveryNotice as RecoveryNotice
from ._hub import SlowSubscriber as SlowSubscriber
from ._hub import Subscription as Subscription
from ._memory import MemoryBackend as MemoryBackend
from ._presence import Presence as Presence
from ._presence import Tracking as Tracking
from ._presence_model import InvalidPresence as InvalidPresence
from ._presence_model import PresenceDiff as PresenceDiff
from ._presence_model import PresenceEvent as PresenceEvent
from ._presence_model import PresenceFull as PresenceFull
from ._presence_model import PresenceMember as PresenceMember
from ._presence_model import PresenceState as PresenceState
from ._presence_views import PresenceSubscription as PresenceSubscription

if TYPE_CHECKING:
    from ._redis import RedisBackend as RedisBackend

__all__ = (
    "Backend",
    "ChannelMessage",
    "ChannelUnavailable",
    "Hub",
    "InvalidPresence",
    "InvalidResume",
    "MemoryBackend",
    "Policy",
    "Presence",
    "PresenceDiff",
    "PresenceEvent",
    "PresenceFull",
    "PresenceMember",
    "PresenceState",
    "PresenceSubscription",
    "RecoveryNotice",
    "RedisBackend",
    "SlowSubscriber",
    "Subscription",
    "Tracking",
)

# Public classes and functions report the path users import them from (see plait's own
# __init__ for why, and for where that would not be safe).
for _name in __all__:
    _value = globals().get(_name)
    if isinstance(_value, type | _FunctionType) and _value.__module__.startswith(f"{__name__}._"):
        _value.__module__ = __name__
del _name, _value


def __getattr__(name: str) -> Any:
    if name == "RedisBackend":
        try:
            from ._redis import RedisBackend
        except ModuleNotFoundError as exc:
            if exc.name != "coredis":
                raise
            raise _missing_extra("coredis", "redis", "RedisBackend") from exc

        RedisBackend.__module__ = __name__
        globals()[name] = RedisBackend
        return RedisBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
