"""What a channels backend provides: transport between hubs, and history."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from anyio.abc import TaskStatus

from .._exceptions import PlaitError

__all__ = ("Backend", "ChannelUnavailable", "Deliver", "StoredMessage")

StoredMessage = tuple[str, bytes]
"""A message as a backend keeps it: its id and its encoded payload."""

Deliver = Callable[[str, str, bytes], None]
"""``deliver(channel, message_id, payload)``: hand a message to the hub's subscribers.

It never blocks and never waits on a subscriber.
"""


class ChannelUnavailable(PlaitError):
    """The channels' transport could not serve an operation: unreachable, or it refused.

    Raised by ``hub.publish`` and by a subscribe that replays history while the
    transport is down, and by ``async with hub`` when it cannot be reached at start. A
    hub that is already running keeps running and reconnects on its own. Out of a
    stream or a handler it closes the connection with 1013 (try again later).
    """

    close_code = 1013
    close_reason = "channel unavailable, try again later"


class InvalidResume(PlaitError, ValueError):
    """``since=`` is not a message id of this backend: the client's fault.

    Raised by :meth:`plait.Hub.subscribe` before anything is subscribed. Out of a stream
    or a handler it closes the connection with 1008 and a reason naming ``since``. It is
    a ``ValueError`` too, as the backend's ``id_key`` raises.
    """

    close_code = 1008
    close_reason = "invalid since: not a message id"


class Backend(Protocol):
    """The transport under a :class:`plait.Hub`.

    Message ids are strings that order messages within a channel: a message published
    after another has a greater id (compare with :meth:`id_key`). A backend with history
    keeps the recent messages of each channel so that a subscriber that comes back with
    the id of the last message it saw gets what it missed.
    """

    async def run(self, deliver: Deliver, *, task_status: TaskStatus[None]) -> None:
        """Deliver every message published on a listened channel, until cancelled.

        Call ``task_status.started()`` once ready. A backend that loses its connection
        reconnects (with backoff) and, when it keeps history, delivers what was
        published meanwhile on the channels it listens to.
        """
        ...

    async def publish(self, channel: str, payload: bytes) -> str:
        """Publish ``payload`` on ``channel``; return the message's id. Never waits on
        subscribers."""
        ...

    async def listen(self, channel: str) -> None:
        """Start receiving ``channel`` (the hub's first local subscriber arrived)."""
        ...

    async def unlisten(self, channel: str) -> None:
        """Stop receiving ``channel`` (its last local subscriber left)."""
        ...

    async def history(self, channel: str, after: str | None) -> Sequence[StoredMessage]:
        """The kept messages of ``channel`` with an id greater than ``after`` (all kept
        messages if ``after`` is None), oldest first; empty without history."""
        ...

    async def history_covers(self, channel: str, after: str) -> bool:
        """Whether every message of ``channel`` published after ``after`` is still kept:
        False when the history lost some of them (too many, or too old), so that a replay
        from ``after`` has a gap. May be conservative (False when unsure)."""
        ...

    def id_key(self, message_id: str) -> tuple[int, ...]:
        """A sort key for message ids of this backend."""
        ...
