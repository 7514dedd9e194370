"""Presence in one process: the store of :class:`plait.channels.MemoryBackend`."""

from __future__ import annotations

import itertools
import secrets
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import anyio
from anyio.abc import TaskStatus

from ._backend import DeliverDiff

__all__ = ("MemoryPresence",)


class _Channel:
    __slots__ = ("entries", "seq")

    def __init__(self) -> None:
        self.seq = 0
        self.entries: dict[str, bytes] = {}


class MemoryPresence:
    """Every channel's entries in a dict; changes delivered as they are made.

    A channel is forgotten once it has no entry and nobody listens to it.
    """

    def __init__(self) -> None:
        self._process = secrets.token_hex(4)
        self._refs = itertools.count(1)
        self._channels: dict[str, _Channel] = {}
        self._listened: Counter[str] = Counter()
        self._deliver: DeliverDiff | None = None

    async def run(
        self, deliver: DeliverDiff, lost: Callable[[str], None], *, task_status: TaskStatus[None]
    ) -> None:
        """Deliver changes until cancelled (nothing is ever lost in one process)."""
        self._deliver = deliver
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            self._deliver = None

    def new_ref(self) -> str:
        """``"<this store>:<n>"``."""
        return f"{self._process}:{next(self._refs)}"

    def count(self, channel: str) -> int:
        """The entries of ``channel`` (all of them are this process's)."""
        state = self._channels.get(channel)
        return len(state.entries) if state is not None else 0

    async def change(self, channel: str, add: Mapping[str, bytes], remove: Sequence[str]) -> None:
        """Make the change and deliver it."""
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        leaves = [(ref, state.entries.pop(ref)) for ref in remove if ref in state.entries]
        joins = []
        for ref, entry in add.items():
            old = state.entries.get(ref)
            if old == entry:
                continue
            if old is not None:
                leaves.append((ref, old))
            state.entries[ref] = entry
            joins.append((ref, entry))
        if joins or leaves:
            state.seq += 1
            if self._deliver is not None:
                self._deliver(channel, state.seq, joins, leaves)
        self._forget(channel)

    async def state(self, channel: str) -> tuple[int, dict[str, bytes]]:
        """The entries of ``channel`` now."""
        state = self._channels.get(channel)
        if state is None:
            return 0, {}
        return state.seq, dict(state.entries)

    async def listen(self, channel: str) -> None:
        """Count one more listener (a channel listened to keeps its numbering)."""
        self._listened[channel] += 1

    async def unlisten(self, channel: str) -> None:
        """Count one listener less."""
        self._listened[channel] -= 1
        if self._listened[channel] <= 0:
            del self._listened[channel]
            self._forget(channel)

    def _forget(self, channel: str) -> None:
        state = self._channels.get(channel)
        if state is not None and not state.entries and channel not in self._listened:
            del self._channels[channel]
