"""Presence on a channel: who is there, with a meta per connection, and their comings and goings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.lowlevel

from ._backend import ChannelUnavailable
from ._presence_model import (
    MAX_ENTRIES,
    MAX_KEY,
    MAX_META,
    Entry,
    PresenceFull,
    PresenceMember,
    decode_entry,
    encode_entry,
    members,
)
from ._presence_views import PresenceSubscription

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ("Presence", "Tracking")

_READ_TIMEOUT: Final = 10.0
"""Seconds ``list()`` waits for the backend."""


class Tracking:
    """One tracked presence, from :meth:`Presence.track`: a key and its meta.

    Attributes:
        key: The key tracked (a user id, say).
        ref: This tracking's ref: unique among all, and new after each update.
        meta: The meta as JSON data (a dict), without the ``ref``.
    """

    def __init__(self, presence: Presence, key: str, ref: str, meta: dict[str, Any]) -> None:
        self.key = key
        self.ref = ref
        self.meta = meta
        self._presence = presence
        self._active = True

    async def update(self, meta: Any) -> None:
        """Replace the meta (a status, a typing flag...).

        Subscribers see the old meta leave and the new one join, under a new ``ref``,
        in one diff; the key's count does not change (as Phoenix's ``update``).

        Raises:
            InvalidPresence: ``meta`` is not a JSON object or is too large.
            RuntimeError: The tracking has ended.
        """
        if not self._active:
            raise RuntimeError(f"the presence of {self.key!r} is no longer tracked")
        presence = self._presence
        entry, data = encode_entry(
            self.key, meta, max_key=presence.max_key, max_meta=presence.max_meta
        )
        store = (await presence._hub.presence_views()).store
        old, self.ref, self.meta = self.ref, store.new_ref(), data
        with anyio.CancelScope(shield=True):  # the store bounds its own wait
            await store.change(presence.channel, {self.ref: entry}, [old])
        await anyio.lowlevel.checkpoint()  # a cancellation point, and a turn for others

    def __repr__(self) -> str:
        return f"Tracking(key={self.key!r}, ref={self.ref!r}, meta={self.meta!r})"


class Presence:
    """Who is present on one channel: ``hub.presence(channel)``.

    ::

        presence = hub.presence("lobby")
        async with presence.track(user.id, {"name": user.name}) as tracking:
            ...                             # present while the block runs
        await presence.list()               # {key: PresenceMember(metas, count)}
        async with presence.subscribe() as events:
            async for event in events:      # PresenceState, then PresenceDiff...
                ...

    Presence is per key, with one meta per tracking: the same key tracked from two
    connections (two tabs) is one presence with a count of two. With a
    :class:`~plait.channels.RedisBackend`, every process sees the same presence, and
    the entries of a process that died without cleaning up go within the backend's
    ``presence_ttl + presence_sweep`` seconds.

    Args:
        hub: The hub (:meth:`plait.Hub.presence` makes these).
        channel: The channel's name.
        max_key: The longest key accepted, in UTF-8 bytes.
        max_meta: The largest meta accepted, in bytes of JSON.
        max_entries: Trackings on this channel that this process may hold at once.
    """

    def __init__(
        self,
        hub: Hub,
        channel: str,
        *,
        max_key: int = MAX_KEY,
        max_meta: int = MAX_META,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        if not isinstance(channel, str) or not channel:
            raise ValueError("a presence channel is a non-empty string")
        if min(max_key, max_meta, max_entries) < 1:
            raise ValueError("max_key, max_meta and max_entries must be at least 1")
        self.channel = channel
        self.max_key = max_key
        self.max_meta = max_meta
        self.max_entries = max_entries
        self._hub = hub

    @asynccontextmanager
    async def track(self, key: str, meta: Any = None) -> AsyncIterator[Tracking]:
        """Be present as ``key`` with ``meta`` for the duration of the block.

        Leaving the block, or being cancelled anywhere in it, ends the tracking: the
        removal is shielded from the cancellation and bounded in time, and subscribers
        see the leave. Tracking never fails because Redis is away: the entry is kept
        in this process and written once Redis is back.

        Args:
            key: Who is present (a user id, a name): one presence per key.
            meta: What to show of this tracking: a JSON object (a dict, a msgspec
                Struct, a dataclass; ``None`` for ``{}``), without a ``"ref"`` field.

        Yields:
            The :class:`Tracking`, to read its ``ref`` or :meth:`~Tracking.update` it.

        Raises:
            InvalidPresence: The key or the meta is not valid, or too large (1008).
            PresenceFull: This process already holds ``max_entries`` trackings on
                the channel (1013).
            RuntimeError: The hub is not running.
        """
        entry, data = encode_entry(key, meta, max_key=self.max_key, max_meta=self.max_meta)
        store = (await self._hub.presence_views()).store
        if store.count(self.channel) >= self.max_entries:
            raise PresenceFull(
                f"this process already tracks {self.max_entries} presences on {self.channel!r}"
            )
        tracking = Tracking(self, key, store.new_ref(), data)
        try:
            with anyio.CancelScope(shield=True):  # bounded by the store
                await store.change(self.channel, {tracking.ref: entry}, ())
            await anyio.lowlevel.checkpoint()  # a cancellation point, and a turn for others
            yield tracking
        finally:
            tracking._active = False
            with anyio.CancelScope(shield=True):
                await store.change(self.channel, {}, [tracking.ref])

    async def list(self) -> dict[str, PresenceMember]:
        """Who is present now: each key with its metas and its count.

        Returns:
            ``{key: PresenceMember(metas=[{"ref": ..., **meta}, ...], count=n)}``.

        Raises:
            ChannelUnavailable: Redis could not be reached (1013).
            RuntimeError: The hub is not running.
        """
        await anyio.lowlevel.checkpoint()  # also where the store answers at once (memory)
        store = (await self._hub.presence_views()).store
        try:
            with anyio.fail_after(_READ_TIMEOUT):
                _, stored = await store.state(self.channel)
        except TimeoutError:
            raise ChannelUnavailable(f"could not read the presence of {self.channel!r}") from None
        entries: dict[str, Entry] = {}
        for ref, raw in stored.items():
            entry = decode_entry(ref, raw)
            if entry is not None:
                entries[ref] = entry
        return members(entries)

    @asynccontextmanager
    async def subscribe(self, *, buffer: int = 64) -> AsyncIterator[PresenceSubscription]:
        """Follow the channel's presence for the duration of the block.

        The subscription yields a :class:`PresenceState` first, then a
        :class:`PresenceDiff` per change, in order, with nothing missed or repeated
        in between. After Redis comes back from an outage, what changed meanwhile
        arrives as one diff.

        Args:
            buffer: Diffs waiting before they are merged into one.

        Raises:
            ChannelUnavailable: The state could not be read (1013).
            RuntimeError: The hub is not running.
        """
        subscription = PresenceSubscription(self.channel, buffer)
        views = await self._hub.presence_views()
        await views.add(subscription)
        try:
            yield subscription
        finally:
            with anyio.CancelScope(shield=True):
                await views.remove(subscription)

    def __repr__(self) -> str:
        return f"Presence(channel={self.channel!r})"
