"""Presence across processes through Redis: the store of :class:`plait.channels.RedisBackend`.

Keys (``P`` is the backend's ``key_prefix``):

``P presence:<channel>``
    A hash: one field per entry, ``<process>:<n>`` (the ref) → the JSON ``[key, meta]``,
    and the field ``seq``, the number of the channel's last change. A hash left with no
    entry expires after a day.
``P presence-processes``
    A sorted set: each process that has entries, scored with its *deadline* (Redis's
    clock, in milliseconds). A process pushes its deadline ``ttl`` ahead every
    ``ttl / 3`` and with every write: that is its heartbeat.
``P presence-channels:<process>``
    A set: the channels where the process has entries, for whoever removes them.

Changes are PUBLISHed on ``P presence:<channel>`` as the JSON ``[seq, joins, leaves]``,
each entry ``[ref, "[key, meta]"]``. Every write is one Lua script, so the hash, the
``seq`` and what is published agree.

A process that dies without cleaning up (SIGKILL, power loss) stops pushing its deadline.
Every process sweeps every ``sweep`` seconds: it asks for the processes whose deadline
passed and removes their entries, channel by channel, each time in one script that
checks the deadline again and publishes the leaves of what it removed, so each leave is
published once, by whichever process removed the entry. The bound on how long a dead
process stays present is ``ttl + sweep`` (plus a round trip), as long as one process
that uses presence is running.

Each process keeps its own entries in memory. When Redis is unreachable, tracks and
untracks are kept there and the channel is marked; once Redis is back, or when the
process finds that its deadline had passed (it may have been swept), it writes each
channel's entries again as they are (``reconcile``): entries it no longer has are
removed, those that are missing come back as joins.
"""

from __future__ import annotations

import itertools
import logging
import random
import secrets
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import anyio
import coredis
import coredis.commands
import coredis.patterns.pubsub
import coredis.retry
from anyio.abc import TaskStatus

from .._codec import decode_json
from .._exceptions import MessageDecodeError
from ._backend import ChannelUnavailable, DeliverDiff
from ._redis import converted, describe, is_failure, published, redacted
from ._redis_presence_scripts import BEAT, DEAD, FORGET, SWEEP, WRITE

__all__ = ("RedisPresence",)

logger = logging.getLogger(__name__)

_FIRST_DELAY: Final = 0.1
_MAX_DELAY: Final = 2.0
_CONNECT_TIMEOUT: Final = 5.0
_RESPONSE_TIMEOUT: Final = 10.0
_SUBSCRIBE_TIMEOUT: Final = 5.0
_WRITE_TIMEOUT: Final = 3.0
"""Seconds a track, an update or an untrack waits for Redis; then it is left to the
next reconcile."""
_WITHDRAW_TIMEOUT: Final = 5.0
"""Seconds a stopping process spends removing its entries."""
_EMPTY_MS: Final = 24 * 3600 * 1000
"""How long a channel's hash with no entry is kept (with its ``seq``)."""


class RedisPresence:
    """The presence store of a :class:`~plait.channels.RedisBackend`.

    Args:
        url: Where Redis is.
        key_prefix: Put before every key and pub/sub channel.
        ttl: Seconds a process stays present after its last heartbeat.
        sweep: Seconds between two sweeps for processes that are gone.
    """

    def __init__(self, url: str, *, key_prefix: str, ttl: float, sweep: float) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.ttl = ttl
        self.sweep = sweep
        self.process = secrets.token_hex(8)
        self._ttl_ms = max(1, round(ttl * 1000))
        self._refs = itertools.count(1)
        self._topic_prefix = f"{key_prefix}presence:".encode()
        self._deadlines = f"{key_prefix}presence-processes"
        self._local: dict[str, dict[str, bytes]] = {}  # this process's entries, by channel
        self._dirty: dict[str, None] = {}  # channels whose entries Redis may not have right
        self._locks: dict[str, anyio.Lock] = {}  # one write at a time per channel
        self._listened: Counter[str] = Counter()
        self._subscribed: set[str] = set()
        self._client: coredis.Redis[bytes] | None = None
        self._pubsub: coredis.patterns.pubsub.PubSub[bytes] | None = None
        self._subscribing: anyio.Lock | None = None
        self._connected = False
        self._registered = False  # has reached Redis once: has something to withdraw
        self._rewrite_all = False  # its deadline had passed: write every channel again
        self._wake_beat: anyio.Event | None = None
        self._deliver: DeliverDiff | None = None
        self._lost: Callable[[str], None] | None = None
        self._scripts: dict[str, coredis.commands.Script[bytes]] = {}

    async def run(
        self, deliver: DeliverDiff, lost: Callable[[str], None], *, task_status: TaskStatus[None]
    ) -> None:
        """Connect (again and again), beat, sweep, and deliver changes until cancelled;
        then remove this process's entries. Started once the first connection was
        tried, whether it worked or not."""
        client = self._new_client()
        try:
            async with client:
                self._client = client
                self._scripts = {
                    name: client.register_script(source)
                    for name, source in (
                        ("write", WRITE),
                        ("beat", BEAT),
                        ("dead", DEAD),
                        ("sweep", SWEEP),
                        ("forget", FORGET),
                    )
                }
                self._subscribing = anyio.Lock()
                self._deliver, self._lost = deliver, lost
                async with anyio.create_task_group() as task_group:
                    await task_group.start(self._serve)
                    task_status.started()
                    task_group.start_soon(self._beat_forever)
                    task_group.start_soon(self._sweep_forever)
        finally:
            self._deliver = self._lost = None
            self._client = None  # from now on, changes stay in memory
            self._connected = False
            with anyio.CancelScope(shield=True), anyio.move_on_after(_WITHDRAW_TIMEOUT):
                await self._withdraw()

    def _new_client(self) -> coredis.Redis[bytes]:
        return coredis.Redis.from_url(
            self.url,
            connect_timeout=_CONNECT_TIMEOUT,
            stream_timeout=_RESPONSE_TIMEOUT,
            retry_policy=coredis.retry.NoRetryPolicy(),
        )

    def new_ref(self) -> str:
        """``"<process>:<n>"``: the process part is what a sweep looks for."""
        return f"{self.process}:{next(self._refs)}"

    def count(self, channel: str) -> int:
        """This process's entries on ``channel``."""
        return len(self._local.get(channel, ()))

    async def change(self, channel: str, add: Mapping[str, bytes], remove: Sequence[str]) -> None:
        """Change this process's entries now, and in Redis if it can (bounded wait)."""
        local = self._local.setdefault(channel, {})
        for ref in remove:
            local.pop(ref, None)
        local.update(add)
        if not local:
            del self._local[channel]
        if self._client is None:
            return  # not running: nothing in Redis is this process's any more
        if not self._connected:
            self._dirty[channel] = None  # written once Redis is back
            return
        await self._write(channel, add, remove)

    async def state(self, channel: str) -> tuple[int, dict[str, bytes]]:
        """``seq`` and the entries of ``channel``, as Redis has them.

        Raises:
            ChannelUnavailable: Redis could not be reached.
        """
        client = self._client
        if client is None or not self._connected:
            raise ChannelUnavailable(f"could not read the presence of {channel!r}: no Redis")
        with converted(f"could not read the presence of {channel!r}"):
            stored = await client.hgetall(self._hash(channel))
        seq = stored.pop(b"seq", b"0")
        return int(seq), {ref.decode(): entry for ref, entry in stored.items()}

    async def listen(self, channel: str) -> None:
        """SUBSCRIBE to the channel's changes (at once, or when Redis is back)."""
        self._listened[channel] += 1
        await self._subscribe(channel)

    async def unlisten(self, channel: str) -> None:
        """UNSUBSCRIBE once nobody listens."""
        self._listened[channel] -= 1
        if self._listened[channel] <= 0:
            del self._listened[channel]
        await self._subscribe(channel)

    def statistics(self) -> dict[str, int]:
        """Counters: ``channels`` with entries of this process, ``entries``, and
        channels waiting to be written again (``dirty``)."""
        return {
            "channels": len(self._local),
            "entries": sum(map(len, self._local.values())),
            "dirty": len(self._dirty),
        }

    # -- the connection ---------------------------------------------------------------

    async def _serve(self, *, task_status: TaskStatus[None]) -> None:
        """Keep the pub/sub connection, and register on each (re)connection."""
        client = self._client
        assert client is not None
        delay = _FIRST_DELAY
        started = False
        while True:
            try:
                async with client.pubsub(
                    ignore_subscribe_messages=True,
                    retry_policy=None,
                    subscription_timeout=_SUBSCRIBE_TIMEOUT,
                ) as pubsub:
                    try:
                        await self._connect(pubsub)
                        async with anyio.create_task_group() as task_group:
                            task_group.start_soon(self._receive, pubsub)
                            await self._resume(again=started)
                            if not started:
                                task_status.started()
                                started = True
                            delay = _FIRST_DELAY
                    finally:
                        self._connected = False
                        self._pubsub = None
            except Exception as exc:
                if not is_failure(exc):
                    raise
                log = logger.warning if delay == _FIRST_DELAY else logger.debug
                log(
                    "presence lost Redis at %s (%s); reconnecting",
                    redacted(self.url),
                    describe(exc),
                )
            if not started:
                task_status.started()  # tracks are kept here until Redis answers
                started = True
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _MAX_DELAY)

    async def _connect(self, pubsub: coredis.patterns.pubsub.PubSub[bytes]) -> None:
        """Beat, and subscribe to every listened channel."""
        await self._beat()
        self._registered = True
        assert self._subscribing is not None
        async with self._subscribing:
            self._pubsub = pubsub
            self._subscribed = set()
            channels = list(self._listened)
            if channels:
                await pubsub.subscribe(*(self._topic(channel) for channel in channels))
            self._subscribed.update(channels)
        self._connected = True

    async def _resume(self, *, again: bool) -> None:
        """Whatever happened while away (a restart, a sweep), Redis gets this process's
        entries as they are now; then the views read their channels again."""
        if again:
            logger.warning("presence reconnected to Redis at %s", redacted(self.url))
        client = self._client
        if client is not None:
            await self._reconcile(await self._channels(client))
        for channel in list(self._subscribed):
            if self._lost is not None:
                self._lost(channel)

    async def _receive(self, pubsub: coredis.patterns.pubsub.PubSub[bytes]) -> None:
        prefix = self._topic_prefix
        async for topic, frame in published(pubsub):
            if not topic.startswith(prefix):
                continue
            change = _parse(frame)
            if change is None:
                logger.debug("ignored a message that plait did not publish on %r", topic)
                continue
            deliver = self._deliver
            if deliver is None:
                continue
            try:
                deliver(topic[len(prefix) :].decode(), *change)
            except Exception:
                logger.exception("could not deliver a presence change on %r", topic)

    async def _subscribe(self, channel: str) -> None:
        """Make the subscription to ``channel`` match whether it is listened to."""
        lock = self._subscribing
        if lock is None:
            return  # not running: `_connect` subscribes once it is
        async with lock:
            pubsub = self._pubsub
            wanted = channel in self._listened
            if pubsub is None or wanted == (channel in self._subscribed):
                return
            try:
                if wanted:
                    await pubsub.subscribe(self._topic(channel))
                    self._subscribed.add(channel)
                else:
                    await pubsub.unsubscribe(self._topic(channel))
                    self._subscribed.discard(channel)
            except Exception as exc:
                if not is_failure(exc):
                    raise
                # The connection is going: `_connect` subscribes what is listened.
                logger.debug("(un)subscribing presence %r failed: %s", channel, describe(exc))

    # -- writes ---------------------------------------------------------------------

    async def _write(
        self,
        channel: str,
        add: Mapping[str, bytes],
        remove: Sequence[str],
        *,
        reconcile: bool = False,
    ) -> None:
        """Write one change of this process's entries on ``channel``, one at a time
        per channel; what fails (or takes too long) is left to a reconcile."""
        lock = self._locks.get(channel)
        if lock is None:
            lock = self._locks[channel] = anyio.Lock()
        lapsed = False
        try:
            with anyio.move_on_after(_WRITE_TIMEOUT) as deadline:
                async with lock:
                    if channel in self._dirty:
                        # Redis may be wrong about this channel: write all of it.
                        del self._dirty[channel]
                        reconcile = True
                    if reconcile:
                        add, remove = dict(self._local.get(channel, {})), ()
                    try:
                        lapsed = await self._script(channel, add, remove, reconcile)
                    except BaseException:
                        self._dirty[channel] = None
                        raise
            if deadline.cancelled_caught:
                self._dirty[channel] = None
                logger.warning("presence: Redis took too long to write %r; will retry", channel)
        except Exception as exc:
            if not is_failure(exc):
                raise
            logger.warning(
                "presence could not write %r to Redis (%s); will retry", channel, describe(exc)
            )
        finally:
            idle = not lock.locked() and not lock.statistics().tasks_waiting
            if idle and self._locks.get(channel) is lock:
                del self._locks[channel]
        if lapsed:
            self._lapsed()

    async def _script(
        self,
        channel: str,
        add: Mapping[str, bytes],
        remove: Sequence[str],
        reconcile: bool,
        *,
        client: coredis.Redis[bytes] | None = None,
    ) -> bool:
        pairs = [part for ref, entry in add.items() for part in (ref, entry)]
        keys = [self._hash(channel), self._channels_key(self.process), self._deadlines]
        args: list[str | bytes | int] = [
            self._topic(channel),
            channel,
            self.process,
            self._ttl_ms,
            _EMPTY_MS,
            "1" if reconcile else "0",
            "1" if channel in self._local else "0",
            len(add),
            *pairs,
            *remove,
        ]
        reply: object = await self._scripts["write"](keys=keys, args=args, client=client)
        return reply == 1

    async def _reconcile(self, channels: Sequence[str]) -> None:
        for channel in channels:
            await self._write(channel, {}, (), reconcile=True)

    async def _channels(self, client: coredis.Redis[bytes]) -> list[str]:
        """Every channel where this process has or may have entries."""
        remote = await client.smembers(self._channels_key(self.process))
        return list(dict.fromkeys([*self._local, *self._dirty, *(c.decode() for c in remote)]))

    def _lapsed(self) -> None:
        """This process's deadline had passed: another may have swept its entries.
        The heartbeat task writes them all again, now (not the write that found out,
        which must stay bounded)."""
        self._rewrite_all = True
        if self._wake_beat is not None:
            self._wake_beat.set()

    async def _withdraw(self) -> None:
        """Remove this process's entries (it stops): their leaves are published now.

        Through a connection of its own: the store's went with the cancellation.
        """
        if not self._registered:
            return  # never reached Redis: it holds nothing of this process
        self._local.clear()
        self._dirty.clear()
        try:
            async with self._new_client() as client:
                for channel in await self._channels(client):
                    await self._script(channel, {}, (), True, client=client)
                await client.zrem(self._deadlines, [self.process])
                await client.delete([self._channels_key(self.process)])
        except Exception as exc:
            if not is_failure(exc):
                raise
            logger.warning(
                "presence could not remove this process's entries (%s): they go within %.1f s",
                describe(exc),
                self.ttl + self.sweep,
            )

    # -- heartbeat and sweep ------------------------------------------------------------

    async def _beat(self) -> bool:
        reply: object = await self._scripts["beat"](
            keys=[self._deadlines], args=[self.process, self._ttl_ms]
        )
        return reply == 1

    async def _beat_forever(self) -> None:
        """Beat every ``ttl / 3``; write again what Redis may have wrong."""
        while True:
            wake = self._wake_beat = anyio.Event()
            with anyio.move_on_after(self.ttl / 3):
                await wake.wait()
            client = self._client
            if not self._connected or client is None:
                continue
            rewrite_all, self._rewrite_all = self._rewrite_all, False
            try:
                if await self._beat() or rewrite_all:
                    logger.warning(
                        "presence heartbeat to Redis lapsed: writing this process's entries again"
                    )
                    await self._reconcile(await self._channels(client))
                elif self._dirty:
                    await self._reconcile(list(self._dirty))
            except Exception as exc:
                if not is_failure(exc):
                    raise
                self._rewrite_all = self._rewrite_all or rewrite_all  # next time, then
                logger.debug("presence heartbeat failed: %s", describe(exc))

    async def _sweep_forever(self) -> None:
        while True:
            if self._connected:
                try:
                    await self._sweep()
                except Exception as exc:
                    if not is_failure(exc):
                        raise
                    logger.debug("presence sweep failed: %s", describe(exc))
            await anyio.sleep(self.sweep)

    async def _sweep(self) -> None:
        """Remove the entries of the processes whose deadline passed."""
        client = self._client
        assert client is not None
        dead: object = await self._scripts["dead"](keys=[self._deadlines])
        for process in dead if isinstance(dead, list) else ():
            if not isinstance(process, bytes) or process.decode() == self.process:
                continue  # this one's own lapse is handled by its heartbeat
            name = process.decode()
            channels_key = self._channels_key(name)
            for raw in await client.smembers(channels_key):
                channel = raw.decode()
                removed: object = await self._scripts["sweep"](
                    keys=[self._hash(channel), channels_key, self._deadlines],
                    args=[self._topic(channel), channel, name, _EMPTY_MS],
                )
                if isinstance(removed, int) and removed > 0:
                    logger.info(
                        "presence: removed %d entries of %r left by process %s",
                        removed,
                        channel,
                        name,
                    )
            await self._scripts["forget"](keys=[self._deadlines, channels_key], args=[name])

    # -- names ------------------------------------------------------------------------

    def _hash(self, channel: str) -> str:
        return f"{self.key_prefix}presence:{channel}"

    def _topic(self, channel: str) -> bytes:
        return self._topic_prefix + channel.encode()

    def _channels_key(self, process: str) -> str:
        return f"{self.key_prefix}presence-channels:{process}"


def _parse(frame: bytes) -> tuple[int, list[tuple[str, bytes]], list[tuple[str, bytes]]] | None:
    """``[seq, joins, leaves]`` as the scripts publish it; None if it is not that."""
    try:
        data = decode_json(frame)
    except MessageDecodeError:
        return None
    match data:
        case [int(seq), joins, leaves]:
            parsed = (_entries(joins), _entries(leaves))
            if parsed[0] is not None and parsed[1] is not None:
                return seq, parsed[0], parsed[1]
    return None


def _entries(data: object) -> list[tuple[str, bytes]] | None:
    if data == {}:
        return []  # Lua's cjson writes an empty table as an object
    if not isinstance(data, list):
        return None
    entries = []
    for item in data:
        match item:
            case [str(ref), str(entry)]:
                entries.append((ref, entry.encode()))
            case _:
                return None
    return entries
