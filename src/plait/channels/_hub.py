"""The hub: publish to channels, subscribe with bounded buffers and a slow-consumer policy."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from .._backend import YIELD_EVERY, waiters
from .._codec import decode_payload, encode_json, encode_payload
from .._engine import closer
from .._exceptions import PlaitError
from ._backend import Backend, ChannelUnavailable, InvalidResume, PresenceStore, StoredMessage
from ._memory import MemoryBackend
from ._presence import Presence
from ._presence_model import MAX_ENTRIES, MAX_KEY, MAX_META
from ._presence_views import PresenceViews

__all__ = ("ChannelMessage", "Hub", "Policy", "RecoveryNotice", "SlowSubscriber", "Subscription")

logger = logging.getLogger(__name__)

_MAX_ID: Final = 64
"""The longest message id a resume may name (Redis's are at most 41 characters)."""
_LISTEN_TIMEOUT: Final = 10.0
"""Seconds a backend may take to start or stop listening to a channel."""

Policy: TypeAlias = Literal["drop_oldest", "drop_newest", "disconnect"]
"""What a full subscription buffer does with a new message: drop the oldest queued one,
drop the new one, or end the subscription with :class:`SlowSubscriber`."""


class SlowSubscriber(PlaitError):
    """A subscription with the ``"disconnect"`` policy fell behind by a full buffer.

    Escaping a handler, it closes the connection with 1013 (try again later).
    """

    close_code = 1013
    close_reason = "subscriber too slow"


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    """One message received from a channel.

    Yielded from a stream, it goes to the client as JSON
    ``{"channel": ..., "id": ..., "data": ...}``: a client that reconnects passes the
    last ``id`` it saw to resume without a gap.
    """

    channel: str
    """The channel it was published on."""
    id: str
    """Its id: later messages of a channel have greater ids."""
    data: Any
    """What was published: bytes, str, or the JSON data msgspec made of an object."""


@dataclass(frozen=True, slots=True)
class RecoveryNotice:
    """Some messages of ``channels`` are gone: what follows is not all that was published.

    A subscription yields one, in the place of the gap, when its backend came back
    from a lost connection and the history no longer held everything published
    meanwhile (a Redis restart without persistence, or more than ``history`` messages
    in the outage). Yielded from a stream it goes to the client as JSON
    ``{"channels": [...], "recovered": false}``, the marker a resume with a gap starts
    with (:meth:`Subscription.recovery_notice`): plait.js emits ``recovery`` for it, and
    a client should reload its state.
    """

    channels: tuple[str, ...]
    """The channels with the gap."""
    recovered: bool = False
    """Always False: for the client, which tells the marker by it."""


_last_encoded: tuple[object, bytes] = (None, b"")


def encode_message(message: ChannelMessage) -> bytes:
    """``message`` as JSON (``channel``, ``id``, ``data``), encoded once per publish.

    One publish reaches every subscriber as the same object, and their streams send it
    one after another: the first encodes it, the others find it in this one-entry
    cache (compared by identity, and swapped as one tuple, so threads running loops of
    their own cannot mix two entries up).
    """
    global _last_encoded
    last = _last_encoded
    if last[0] is message:
        return last[1]
    encoded = encode_json(message)
    _last_encoded = (message, encoded)
    return encoded


class Subscription:
    """Messages from one or more channels, as ``async for message in subscription``.

    Made by :meth:`Hub.subscribe`, not directly. Each subscription has its own bounded
    buffer; the publisher never waits for it.

    Attributes:
        channels: The channels subscribed to.
        buffer: How many live messages may wait before ``policy`` applies.
        policy: What a full buffer does with a new message.
        dropped: How many messages the policy dropped so far.
        unrecovered: The channels with a gap: messages published after ``since``
            that the history no longer held, or, later, messages lost while the
            backend's connection was down (each such gap is also yielded in its place,
            as a :class:`RecoveryNotice`).
        gaps: How many gaps the backend reported while subscribed.
    """

    def __init__(
        self,
        hub: Hub,
        channels: tuple[str, ...],
        buffer: int,
        policy: Policy,
    ) -> None:
        if buffer < 1:
            raise ValueError("buffer must be at least 1")
        if policy not in ("drop_oldest", "drop_newest", "disconnect"):
            raise ValueError(f"unknown policy {policy!r}")
        self.channels = channels
        self.buffer = buffer
        self.policy: Policy = policy
        self.dropped = 0
        self.unrecovered: tuple[str, ...] = ()
        self.gaps = 0
        self._hub = hub
        self._live: deque[ChannelMessage | RecoveryNotice] = deque()
        # What a resume replays, per channel, decoded one message at a time as it is
        # taken: a history of 10,000 decoded at once held the loop for tens of ms.
        self._replay: deque[tuple[str, Iterator[StoredMessage]]] = deque()
        self._replaying = 0  # messages left in _replay
        self._last: dict[str, tuple[int, ...]] = {}
        self._failed = False
        # The connection this subscriber sends to, if any: a subscriber stuck in a send
        # never comes back for the failure, so the policy ends its connection itself.
        self._close_now = closer.get()
        self._new_waiter, self._wake = (wait := waiters()).new, wait.wake
        self._checkpoint = wait.checkpoint
        self._ticks = 0  # messages taken since the last checkpoint
        self._waiter: Any = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChannelMessage | RecoveryNotice:
        """The next message, or a :class:`RecoveryNotice` where messages were lost.

        A checkpoint, which yields to the other tasks once every few messages taken
        from a backlog, so that a long one cannot starve them."""
        ticks = self._ticks + 1
        if ticks >= YIELD_EVERY:
            self._ticks = 0
            await self._checkpoint()
        else:
            self._ticks = ticks
        key = self._hub.backend.id_key
        message: ChannelMessage | RecoveryNotice
        while True:
            if self._replay:
                channel, stored = self._replay[0]
                entry = next(stored, None)
                if entry is None:
                    self._replay.popleft()
                    continue
                self._replaying -= 1
                message = ChannelMessage(channel, entry[0], decode_payload(entry[1]))
            elif self._live:
                message = self._live.popleft()
            elif self._failed:
                raise SlowSubscriber(
                    f"a subscriber to {', '.join(self.channels)} fell {self.buffer} messages behind"
                )
            else:
                self._waiter = self._new_waiter()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
                continue
            if type(message) is RecoveryNotice:
                return message
            assert type(message) is ChannelMessage
            position = key(message.id) if message.id else None
            last = self._last.get(message.channel)
            if position is not None:
                if last is not None and position <= last:
                    continue  # already delivered (replayed, then seen live)
                self._last[message.channel] = position
            return message

    @property
    def recovered(self) -> bool:
        """False when a resume (``since=``) could not replay everything missed: the
        history no longer held some of it (see :attr:`unrecovered`). Tell the client
        (:meth:`recovery_notice`), which should then reload its state."""
        return not self.unrecovered

    def recovery_notice(self) -> dict[str, Any] | None:
        """The marker a stream yields first when the resume has a gap, else None.

        ``{"recovered": false, "channels": [...]}``, as Centrifugo's ``recovered:
        false`` tells its clients: the messages that follow are not all that was
        missed on those channels.
        """
        if not self.unrecovered:
            return None
        return {"recovered": False, "channels": list(self.unrecovered)}

    def statistics(self) -> dict[str, int]:
        """Counters: messages ``buffered`` and ``dropped``, and ``gaps`` reported."""
        return {
            "buffered": len(self._live) + self._replaying,
            "dropped": self.dropped,
            "gaps": self.gaps,
        }

    def _put(self, message: ChannelMessage) -> None:
        """Queue a live message (from the hub; never blocks)."""
        if self._failed:
            self._count_dropped(1)  # nobody will read it: the subscriber is being let go
            return
        if len(self._live) >= self.buffer:
            if self.policy == "disconnect":
                self._failed = True
                self._count_dropped(len(self._live) + 1)  # what was queued, and this one
                self._live.clear()
                if self._close_now is not None and self._waiter is None:
                    # Not waiting for messages: busy, maybe stuck in a send to a client
                    # that stopped reading. Do not wait for it to come back.
                    logger.warning(
                        "closing with 1013: a subscriber to %s fell %d messages behind",
                        ", ".join(self.channels),
                        self.buffer,
                    )
                    self._close_now(SlowSubscriber.close_code, SlowSubscriber.close_reason)
            elif self.policy == "drop_oldest":
                live = self._live
                oldest = live.popleft()
                if type(oldest) is not RecoveryNotice:
                    self._count_dropped(1)
                else:  # the news of a gap is never dropped: the message behind it is
                    if live:
                        live.popleft()
                        self._count_dropped(1)
                    live.appendleft(oldest)
                live.append(message)
            else:
                self._count_dropped(1)
        else:
            self._live.append(message)
        if self._waiter is not None:
            self._wake(self._waiter)

    def _gap(self, channel: str) -> None:
        """The backend lost messages of ``channel``: say so here, in their place."""
        self.gaps += 1
        if channel not in self.unrecovered:
            self.unrecovered += (channel,)
        if not self._failed:
            self._live.append(RecoveryNotice((channel,)))  # past the buffer: never dropped
            if self._waiter is not None:
                self._wake(self._waiter)

    def _count_dropped(self, count: int) -> None:
        self.dropped += count
        self._hub._dropped[self.policy] += count  # by policy, for plait.otel

    def _add_replay(self, channel: str, stored: Sequence[StoredMessage]) -> None:
        """Queue ``channel``'s history to replay, decoded as it is taken."""
        if stored:
            self._replay.append((channel, iter(stored)))
            self._replaying += len(stored)


class Hub:
    """Publish/subscribe between connections, in one process or across many.

    ::

        hub = plait.Hub()                       # in memory; RedisBackend(url) for many
        app = plait.App(routes=[...], hub=hub)  # started with the app, injected by type

        await hub.publish("lobby", {"user": "ada", "text": "hi"})
        async with hub.subscribe("lobby") as subscription:
            async for message in subscription:
                ...

        async with hub.presence("lobby").track("ada", {"device": "phone"}):
            ...                                 # who is there: see presence()

    Run it with ``async with hub:`` (the App does that in its lifespan).

    Args:
        backend: The transport; :class:`MemoryBackend` by default.
    """

    __plait_provided__ = "hub"  # handlers get the App's hub by annotating a parameter Hub

    def __init__(self, backend: Backend | None = None) -> None:
        self.backend: Backend = backend if backend is not None else MemoryBackend()
        self._subscribers: dict[str, set[Subscription]] = {}
        # Messages dropped for slow subscribers, by policy (plait.otel reports them).
        self._dropped: dict[str, int] = dict.fromkeys(
            ("drop_oldest", "drop_newest", "disconnect"), 0
        )
        # Channels the backend listens to, and the listens in flight: a subscriber
        # cancelled while it joins must not leave the others deaf.
        self._listened: set[str] = set()
        self._joining: dict[str, anyio.Event] = {}
        self._task_group: TaskGroup | None = None
        self._ticks = 0  # publishes since the last turn given to the other tasks
        # Presence starts with its first use: a hub that never uses it costs nothing.
        self._views: PresenceViews | None = None
        self._views_lock: anyio.Lock | None = None

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError("this Hub is already running")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        try:
            await task_group.start(self._run_backend)
        except BaseException:
            # Leave the group without handing it the error, which it would wrap in an
            # exception group: the backend's own error (ChannelUnavailable) goes out.
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)
            raise
        self._task_group = task_group
        self._views_lock = anyio.Lock()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        task_group, self._task_group = self._task_group, None
        assert task_group is not None
        task_group.cancel_scope.cancel()
        try:
            return await task_group.__aexit__(exc_type, exc, traceback)
        finally:
            self._views = self._views_lock = None

    async def _run_backend(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        await self.backend.run(self._deliver, self._lost, task_status=task_status)

    async def publish(self, channel: str, message: Any) -> str:
        """Publish ``message`` (bytes, str, or anything msgspec encodes) on ``channel``.

        Returns:
            The message's id. The publisher never waits on a slow subscriber.

        Raises:
            RuntimeError: The hub is not running.
            TypeError: The message cannot be encoded.
        """
        if self._task_group is None:
            raise RuntimeError("the Hub is not running: use `async with hub:` or App(hub=...)")
        # A checkpoint, also where the backend does not suspend (in memory): each call
        # is a cancellation point, and every YIELD_EVERY-th gives the other tasks a turn.
        # Not a turn at each call: publishes at hand then go out together, and each
        # subscriber wakes once for the batch, not once per message.
        ticks = self._ticks + 1
        if ticks >= YIELD_EVERY:
            ticks = 0
            await waiters().checkpoint()
        else:
            await anyio.lowlevel.checkpoint_if_cancelled()
        self._ticks = ticks
        return await self.backend.publish(channel, encode_payload(message))

    @asynccontextmanager
    async def subscribe(
        self,
        *channels: str,
        buffer: int = 64,
        policy: Policy = "drop_oldest",
        since: str | Mapping[str, str] | None = None,
    ) -> AsyncIterator[Subscription]:
        """Subscribe to ``channels`` for the duration of the block.

        Args:
            channels: One or more channel names.
            buffer: Messages queued for this subscriber before ``policy`` applies.
            policy: ``"drop_oldest"``, ``"drop_newest"`` or ``"disconnect"``.
            since: The id of the last message the subscriber saw (or one per channel):
                what was published after it and kept in history comes first, in order,
                then live messages, with no gap and no duplicate.

        Raises:
            InvalidResume: ``since`` is not a message id (1008 out of a stream).
            ChannelUnavailable: The history could not be read (1013 out of a stream).

        Leaving the block, or being cancelled anywhere inside it, unsubscribes; the
        last subscriber leaving a channel stops the hub listening to it.
        """
        if not channels:
            raise ValueError("subscribe to at least one channel")
        if since is not None:
            self._check_since(since)
        if self._task_group is None:
            raise RuntimeError("the Hub is not running: use `async with hub:` or App(hub=...)")
        subscription = Subscription(self, tuple(dict.fromkeys(channels)), buffer, policy)
        registered: list[str] = []
        try:
            for channel in subscription.channels:
                self._subscribers.setdefault(channel, set()).add(subscription)
                registered.append(channel)
                await self._listen(channel)
            # _listen() is shielded: a cancellation that came meanwhile is delivered here.
            await anyio.lowlevel.checkpoint_if_cancelled()
            if since is not None:
                await self._replay(subscription, since)
            yield subscription
        finally:
            with anyio.CancelScope(shield=True):
                await self._unregister(subscription, registered)

    def _check_since(self, since: str | Mapping[str, str]) -> None:
        ids = [since] if isinstance(since, str) else list(since.values())
        for message_id in ids:
            try:
                valid = isinstance(message_id, str) and len(message_id) <= _MAX_ID
                if valid:
                    self.backend.id_key(message_id)
            except ValueError:
                valid = False
            if not valid:
                raise InvalidResume(f"since={str(message_id)[:40]!r} is not a message id")

    async def _listen(self, channel: str) -> None:
        """Make sure the backend listens to ``channel`` before the subscriber goes on.

        One subscriber at a time asks the backend, shielded (and bounded): cancelled
        halfway, a SUBSCRIBE might never go out while the hub believes it did. Those
        joining meanwhile wait for it, and ask again if it failed.
        """
        while channel not in self._listened:
            joining = self._joining.get(channel)
            if joining is not None:
                await joining.wait()
                continue
            done = self._joining[channel] = anyio.Event()
            try:
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(_LISTEN_TIMEOUT) as deadline:
                        await self.backend.listen(channel)
                    if deadline.cancelled_caught:
                        raise ChannelUnavailable(f"could not listen to {channel!r} in time")
                if channel in self._subscribers:
                    self._listened.add(channel)
                else:  # everyone left while it was asked: take it back
                    await self._unlisten(channel, asked=True)
            finally:
                del self._joining[channel]
                done.set()

    async def _unlisten(self, channel: str, *, asked: bool = False) -> None:
        if not asked and channel not in self._listened:
            return
        self._listened.discard(channel)
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_LISTEN_TIMEOUT):
                await self.backend.unlisten(channel)
        except Exception:
            logger.warning("could not stop listening to %r", channel, exc_info=True)

    async def _replay(self, subscription: Subscription, since: str | Mapping[str, str]) -> None:
        for channel in subscription.channels:
            after = since if isinstance(since, str) else since.get(channel)
            if after is None:
                continue
            stored: list[StoredMessage] = list(await self.backend.history(channel, after))
            if not await self.backend.history_covers(channel, after):
                subscription.unrecovered += (channel,)
            subscription._add_replay(channel, stored)

    async def _unregister(self, subscription: Subscription, channels: list[str]) -> None:
        for channel in channels:
            members = self._subscribers.get(channel)
            if members is None:
                continue
            members.discard(subscription)
            if not members:
                del self._subscribers[channel]
                await self._unlisten(channel)

    def _deliver(self, channel: str, message_id: str, payload: bytes) -> None:
        members = self._subscribers.get(channel)
        if not members:
            return
        message = ChannelMessage(channel, message_id, decode_payload(payload))
        for subscription in tuple(members):
            subscription._put(message)

    def _lost(self, channel: str) -> None:
        for subscription in tuple(self._subscribers.get(channel, ())):
            subscription._gap(channel)

    def presence(
        self,
        channel: str,
        *,
        max_key: int = MAX_KEY,
        max_meta: int = MAX_META,
        max_entries: int = MAX_ENTRIES,
    ) -> Presence:
        """Who is present on ``channel``: track, list and subscribe to joins and leaves.

        Cheap, with no I/O: make one wherever it is needed. Presence is separate from
        the channel's messages (a presence channel may share a message channel's name).

        Args:
            channel: The channel's name.
            max_key: The longest key accepted, in UTF-8 bytes.
            max_meta: The largest meta accepted, in bytes of JSON.
            max_entries: Trackings on this channel that this process may hold at once.

        Raises:
            TypeError: The backend has no presence (it has no ``presence_store()``).
        """
        if not callable(getattr(self.backend, "presence_store", None)):
            raise TypeError(f"{type(self.backend).__name__} does not offer presence")
        return Presence(self, channel, max_key=max_key, max_meta=max_meta, max_entries=max_entries)

    async def presence_views(self) -> PresenceViews:
        """The hub's presence views, started on first use: plait's internal interface
        for :class:`~plait.channels.Presence`, not part of the public API (use
        :meth:`presence`).

        Raises:
            RuntimeError: The hub is not running.

        :meta private:
        """
        views = self._views
        if views is not None:
            return views
        task_group, lock = self._task_group, self._views_lock
        if task_group is None or lock is None:
            raise RuntimeError("the Hub is not running: use `async with hub:` or App(hub=...)")
        async with lock:
            if self._views is None:
                store: PresenceStore = self.backend.presence_store()  # type: ignore[attr-defined]
                views = PresenceViews(store)
                await task_group.start(views.run)
                self._views = views
            return self._views

    def statistics(self) -> dict[str, int]:
        """Counters: ``channels`` listened to and ``subscriptions`` across them."""
        subscriptions = {s for members in self._subscribers.values() for s in members}
        return {"channels": len(self._subscribers), "subscriptions": len(subscriptions)}

    def dropped_by_policy(self) -> dict[str, int]:
        """Messages dropped for slow subscribers so far, by policy: plait's internal
        interface for :mod:`plait.otel` (``plait.hub.messages.dropped``).

        :meta private:
        """
        return dict(self._dropped)
