"""The hub's side of presence: a view of each watched channel, and its subscribers.

A hub keeps one view per channel that has local subscribers: the channel's entries and
the ``seq`` of the last change it applied. Changes come from the store numbered one by
one; a view applies the next one, hands it to every subscriber (one object for all), and
reads the whole state again when a number is missing or the store says changes were
lost (it reconnected). Reading the state again ends in a diff against the view, so a
subscriber sees one state and then diffs, however the transport fares.

A new subscriber gets the view's state at once, taken in the same step as it starts
receiving changes: nothing is seen twice or missed between the two (Phoenix's
``presence_state`` then ``presence_diff``). The first subscriber of a channel waits for
the view to be read: listen first, then read, then apply the changes that came
meanwhile with a greater ``seq``.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Final, Self

import anyio
from anyio.abc import TaskStatus

from .._backend import YIELD_EVERY, waiters
from ._backend import ChannelUnavailable, PresenceStore, StoredEntries
from ._presence_model import Change, Entry, PresenceEvent, PresenceState, decode_entry, members

__all__ = ("PresenceSubscription", "PresenceViews")

logger = logging.getLogger(__name__)

_LISTEN_TIMEOUT: Final = 10.0
"""Seconds a store may take to start or stop listening to a channel."""
_READ_TIMEOUT: Final = 10.0
"""Seconds a store may take to read a channel's state."""
_MAX_PENDING: Final = 1000
"""Changes kept while a view is being read; past that it is read again."""


class PresenceSubscription:
    """Presence events of one channel, as ``async for event in subscription``.

    Made by :meth:`plait.channels.Presence.subscribe`, not directly. The first event is
    a :class:`PresenceState`, then a :class:`PresenceDiff` per change, in order.

    Its buffer is bounded without losing anything: when ``buffer`` diffs wait, they are
    merged into one that has the same effect (a meta that joined and left meanwhile is
    in neither), so a slow subscriber gets fewer, larger diffs and never a wrong state.

    Attributes:
        channel: The channel.
        buffer: How many diffs may wait before they are merged.
        merged: How many times waiting diffs were merged into one.
    """

    def __init__(self, channel: str, buffer: int) -> None:
        if buffer < 1:
            raise ValueError("buffer must be at least 1")
        self.channel = channel
        self.buffer = buffer
        self.merged = 0
        self._state: PresenceState | None = None
        self._started = False
        self._changes: deque[Change] = deque()
        self._new_waiter, self._wake = (wait := waiters()).new, wait.wake
        self._checkpoint = wait.checkpoint
        self._ticks = 0  # events taken since the last checkpoint
        self._waiter: Any = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> PresenceEvent:
        """The next state or diff: a checkpoint, which yields to the other tasks once
        every few events taken from the buffer."""
        ticks = self._ticks + 1
        if ticks >= YIELD_EVERY:
            self._ticks = 0
            await self._checkpoint()
        else:
            self._ticks = ticks
        while True:
            if self._state is not None:
                state, self._state = self._state, None
                return state
            if self._changes:
                return self._changes.popleft().diff(self.channel)
            self._waiter = self._new_waiter()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def statistics(self) -> dict[str, int]:
        """Counters: diffs ``buffered`` and times they were ``merged``."""
        return {"buffered": len(self._changes), "merged": self.merged}

    def _start(self, state: PresenceState) -> None:
        self._state = state
        self._started = True
        self._notify()

    def _put(self, change: Change) -> None:
        if len(self._changes) >= self.buffer:
            merged = self._changes.popleft()
            while self._changes:
                merged = merged.then(self._changes.popleft())
            self._changes.append(merged.then(change))
            self.merged += 1
        else:
            self._changes.append(change)
        self._notify()

    def _notify(self) -> None:
        if self._waiter is not None:
            self._wake(self._waiter)


class _View:
    """What a hub knows of one channel's presence."""

    __slots__ = (
        "counts",
        "entries",
        "failure",
        "loaded",
        "pending",
        "read_again",
        "ready",
        "seq",
        "snapshot",
        "subscribers",
    )

    def __init__(self) -> None:
        self.seq = 0
        self.entries: dict[str, Entry] = {}
        self.counts: dict[str, int] = {}
        self.subscribers: set[PresenceSubscription] = set()
        self.loaded = False
        self.ready = anyio.Event()
        self.failure: ChannelUnavailable | None = None
        # Changes that came while the state was being read (None: not reading).
        self.pending: list[tuple[int, StoredEntries, StoredEntries]] | None = None
        self.read_again = False
        self.snapshot: PresenceState | None = None


class PresenceViews:
    """The views of a hub, fed by its presence store.

    Args:
        store: Where presence lives.
    """

    def __init__(self, store: PresenceStore) -> None:
        self.store = store
        self._views: dict[str, _View] = {}
        self._stale: dict[str, None] = {}  # channels to read again, in order
        self._wake: anyio.Event | None = None

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """Run the store and read views again when asked, until cancelled."""
        async with anyio.create_task_group() as task_group:
            self._wake = anyio.Event()
            await task_group.start(self.store.run, self._deliver, self._ask)
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                while self._stale:
                    channel = next(iter(self._stale))
                    del self._stale[channel]
                    await self._read(channel)

    async def add(self, subscription: PresenceSubscription) -> None:
        """Start ``subscription``: its state now if the view is read, else once it is.

        Raises:
            ChannelUnavailable: The state could not be read.
        """
        channel = subscription.channel
        view = self._views.get(channel)
        if view is None:
            view = self._views[channel] = _View()
            view.subscribers.add(subscription)
            try:
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(_LISTEN_TIMEOUT) as deadline:
                        await self.store.listen(channel)
                    if deadline.cancelled_caught:
                        raise ChannelUnavailable(f"could not listen to the presence of {channel!r}")
            except BaseException as exc:
                view.failure = exc if isinstance(exc, ChannelUnavailable) else None
                view.ready.set()
                await self.remove(subscription)
                raise
            self._ask(channel)
        else:
            view.subscribers.add(subscription)
            if view.loaded:
                subscription._start(self._snapshot(channel, view))
                return
            if view.ready.is_set():  # the last read failed: try again for this one
                view.ready, view.failure = anyio.Event(), None
                self._ask(channel)
        try:
            await view.ready.wait()
            if not subscription._started:  # one error each: they may share the cause
                reason = view.failure or f"could not read the presence of {channel!r}"
                raise ChannelUnavailable(str(reason)) from view.failure
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.remove(subscription)
            raise

    async def remove(self, subscription: PresenceSubscription) -> None:
        """Stop ``subscription``; the last one of a channel stops listening to it."""
        channel = subscription.channel
        view = self._views.get(channel)
        if view is None or subscription not in view.subscribers:
            return
        view.subscribers.discard(subscription)
        if view.subscribers:
            return
        del self._views[channel]
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_LISTEN_TIMEOUT):
                await self.store.unlisten(channel)
        except Exception:
            logger.warning("could not stop listening to the presence of %r", channel, exc_info=True)

    def _ask(self, channel: str) -> None:
        """Have the state of ``channel`` read (again): changes may have been missed."""
        view = self._views.get(channel)
        if view is None:
            return
        if view.pending is not None:
            view.read_again = True  # being read: what was lost may not be in it
            return
        self._stale[channel] = None
        if self._wake is not None:
            self._wake.set()

    async def _read(self, channel: str) -> None:
        view = self._views.get(channel)
        if view is None:
            return
        view.pending, view.read_again = [], False
        try:
            with anyio.fail_after(_READ_TIMEOUT):
                seq, stored = await self.store.state(channel)
        except (ChannelUnavailable, TimeoutError) as exc:
            view.pending = None
            logger.debug("could not read the presence of %r: %s", channel, exc)
            if not view.loaded:
                view.failure = (
                    exc
                    if isinstance(exc, ChannelUnavailable)
                    else ChannelUnavailable(f"could not read the presence of {channel!r} in time")
                )
                view.ready.set()
            # A view that was read stays as it is until the store is back (it says so).
            return
        if self._views.get(channel) is not view:
            return  # everyone left meanwhile
        pending, view.pending = view.pending, None
        entries: dict[str, Entry] = {}
        for ref, raw in stored.items():
            entry = decode_entry(ref, raw)
            if entry is not None:
                entries[ref] = entry
        gone = [ref for ref, entry in view.entries.items() if entries.get(ref) != entry]
        new = [(ref, entry) for ref, entry in entries.items() if view.entries.get(ref) != entry]
        self._apply(channel, view, seq, new, gone)
        if not view.loaded:
            view.loaded = True
            state = self._snapshot(channel, view)
            for subscription in view.subscribers:
                if not subscription._started:
                    subscription._start(state)
            view.ready.set()
        if view.read_again:
            self._ask(channel)
            return
        for change in pending:
            if change[0] > view.seq:  # the older ones are in what was read
                self._deliver(channel, *change)

    def _deliver(self, channel: str, seq: int, joins: StoredEntries, leaves: StoredEntries) -> None:
        """A change from the store: applied if it is the next one, else the view is
        read again (a change is never delivered twice, so any other number means some
        were missed, or the channel's numbering started again)."""
        view = self._views.get(channel)
        if view is None:
            return
        if view.pending is not None:
            if len(view.pending) < _MAX_PENDING:
                view.pending.append((seq, joins, leaves))
            else:
                view.read_again = True
            return
        if not view.loaded:
            return  # its read failed, or is still to come and will include this
        if seq != view.seq + 1:
            self._ask(channel)
            return
        decoded = []
        for ref, raw in joins:
            entry = decode_entry(ref, raw)
            if entry is not None:
                decoded.append((ref, entry))
        self._apply(channel, view, seq, decoded, [ref for ref, _ in leaves])

    def _apply(
        self, channel: str, view: _View, seq: int, joins: list[tuple[str, Entry]], leaves: list[str]
    ) -> None:
        view.seq = seq
        change = Change({}, {}, {})
        for ref in leaves:
            entry = view.entries.pop(ref, None)
            if entry is not None:
                change.leaves[ref] = entry
                self._count(view, entry[0], -1)
        for ref, entry in joins:
            old = view.entries.get(ref)
            if old == entry:
                continue
            if old is not None:
                change.leaves[ref] = old
                self._count(view, old[0], -1)
            view.entries[ref] = entry
            change.joins[ref] = entry
            self._count(view, entry[0], 1)
        if not (change.joins or change.leaves):
            return
        view.snapshot = None
        touched = [key for key, _ in (*change.leaves.values(), *change.joins.values())]
        change.counts = {key: view.counts.get(key, 0) for key in touched}
        if not view.loaded:
            return  # the subscribers start from the state, which has it
        for subscription in view.subscribers:
            if subscription._started:
                subscription._put(change)

    @staticmethod
    def _count(view: _View, key: str, step: int) -> None:
        count = view.counts.get(key, 0) + step
        if count:
            view.counts[key] = count
        else:
            del view.counts[key]

    def _snapshot(self, channel: str, view: _View) -> PresenceState:
        if view.snapshot is None:
            view.snapshot = PresenceState(channel=channel, presences=members(view.entries))
        return view.snapshot
