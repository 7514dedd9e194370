"""Publish/subscribe between connections: in memory, or across processes with Redis."""

from ._backend import Backend as Backend
from ._hub import ChannelMessage as ChannelMessage
from ._hub import Hub as Hub
from ._hub import Policy as Policy
from ._hub import SlowSubscriber as SlowSubscriber
from ._hub import Subscription as Subscription
from ._memory import MemoryBackend as MemoryBackend

__all__ = (
    "Backend",
    "ChannelMessage",
    "Hub",
    "MemoryBackend",
    "Policy",
    "SlowSubscriber",
    "Subscription",
)
