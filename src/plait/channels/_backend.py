"""What a channels backend provides: transport between hubs, and history."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from anyio.abc import TaskStatus

from .._exceptions import PlaitError

__all__ = (
    "Backend",
    "ChannelUnavailable",
    "Deliver",
    "DeliverDiff",
    "Lost",
    "PresenceStore",
    "StoredEntries",
    "StoredMessage",
)

StoredMessage = tuple[str, bytes]
"""A message as a backend keeps it: its id and its encoded payload."""

Deliver = Callable[[str, str, bytes], None]
"""``deliver(channel, message_id, payload)``: hand a message to the hub's subscribers.

It never blocks and never waits on a subscriber.
"""

Lost = Callable[[str], None]
"""``lost(channel)``: messages of ``channel`` may be gone for good (the transport came
back, and its history no longer held all that was published meanwhile). The hub tells
the channel's subscribers, which yield a :class:`~plait.channels.RecoveryNotice`.

It never blocks.
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

    A backend that also has a ``presence_store()`` method offers presence
    (:meth:`plait.Hub.presence`); both built-in backends do. That interface is not
    stable yet: see ``PresenceStore`` in the source.
    """

    async def run(self, deliver: Deliver, lost: Lost, *, task_status: TaskStatus[None]) -> None:
        """Deliver every message published on a listened channel, until cancelled.

        Call ``task_status.started()`` once ready. A backend that loses its connection
        reconnects (with backoff) and, when it keeps history, delivers what was
        published meanwhile on the channels it listens to. Where it cannot be sure
        that it delivered all of it (the history lost some), it calls ``lost(channel)``
        first: a subscriber never misses a message in silence.
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


StoredEntries = Sequence[tuple[str, bytes]]
"""Presence entries as a store keeps them: ``(ref, entry)``, the entry being the JSON
``[key, meta]`` that a track encoded."""

DeliverDiff = Callable[[str, int, StoredEntries, StoredEntries], None]
"""``deliver(channel, seq, joins, leaves)``: one change of a channel's presence.

``seq`` numbers the changes of a channel one by one; ``leaves`` are applied before
``joins``. It never blocks.
"""


class PresenceStore(Protocol):
    """Where a hub's presence lives: what ``presence_store()`` of a backend returns.

    A backend offers presence by having a ``presence_store()`` method that makes one
    of these (both built-in backends do). Not a stable interface yet.

    Each entry belongs to the process (the hub) that tracked it; the store knows its
    own entries and keeps the shared state in line with them, whatever happens to the
    transport meanwhile.
    """

    async def run(
        self,
        deliver: DeliverDiff,
        lost: Callable[[str], None],
        *,
        task_status: TaskStatus[None],
    ) -> None:
        """Deliver the changes of the listened channels until cancelled; then withdraw
        this process's entries. ``lost(channel)`` says changes may have been missed
        (the transport came back): the hub reads the state again."""
        ...

    def new_ref(self) -> str:
        """A ref no other entry of any process has."""
        ...

    def count(self, channel: str) -> int:
        """How many entries this process has on ``channel``."""
        ...

    async def change(self, channel: str, add: Mapping[str, bytes], remove: Sequence[str]) -> None:
        """Remove the entries ``remove`` names and set those of ``add``, at once.

        Never raises for the transport: a change it could not make is made when the
        transport is back, and the wait is bounded.
        """
        ...

    async def state(self, channel: str) -> tuple[int, dict[str, bytes]]:
        """The ``seq`` of the last change of ``channel`` and its entries by ref.

        Raises:
            ChannelUnavailable: The transport could not be read.
        """
        ...

    async def listen(self, channel: str) -> None:
        """Deliver the changes of ``channel`` (once more: listens are counted)."""
        ...

    async def unlisten(self, channel: str) -> None:
        """Take back one :meth:`listen`."""
        ...
