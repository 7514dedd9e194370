"""The Redis backend: pub/sub carries messages between processes, streams keep history.

Every publish is one Lua script, so the id it gets and the order Redis publishes it in
agree across all publishers: with history, the script adds the payload to a stream
(``<prefix>history:<channel>``, trimmed to ``history`` entries and ``history_age``) and
the stream id is the message id; without history, the id is made the same way from the
server's clock, ``<ms>-<n>``, kept in ``<prefix>seq:<channel>`` for a minute only so that
channel names do not pile up in Redis. The script then PUBLISHes ``b"<id> <payload>"`` on
``<prefix><channel>``.

One pub/sub connection receives every channel the hub listens to. When it is lost, the
backend reconnects with backoff, subscribes again and, with history, delivers from each
channel's stream what came after the last message it delivered, so subscribers see no gap
and no duplicate. Where the stream no longer holds all of that (Redis restarted without
persistence, or more than ``history`` messages were published before the backend was
back), it tells the hub first, and the subscribers yield a ``RecoveryNotice``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import coredis
import coredis.commands
import coredis.exceptions
import coredis.patterns.pubsub
import coredis.retry
from anyio.abc import TaskStatus

from ._backend import ChannelUnavailable, Deliver, Lost, StoredMessage

if TYPE_CHECKING:
    from ._redis_presence import RedisPresence

__all__ = ("RedisBackend", "converted", "describe", "is_failure", "published", "redacted")

logger = logging.getLogger(__name__)


async def published(
    pubsub: coredis.patterns.pubsub.PubSub[bytes],
) -> AsyncIterator[tuple[bytes, bytes]]:
    """The ``(topic, frame)`` of each message published to ``pubsub``'s subscriptions,
    as bytes; subscription notices and anything else are skipped."""
    while True:
        message = await pubsub.get_message()
        if message is None or message["type"] != "message":
            continue
        topic, frame = message["channel"], message["data"]
        if isinstance(topic, bytes) and isinstance(frame, bytes):
            yield topic, frame


class _CancelledConnectAttempt(logging.Filter):
    """coredis logs "Connection attempt failed unexpectedly!" at ERROR, with a traceback,
    when a connection attempt is cancelled: the hub stopping while it reconnects to a
    Redis that was down. Cancelling is how plait ends that attempt, not a failure: such a
    record is lowered to DEBUG. Failures of other kinds keep their level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.exc_info and _cancelled(record.exc_info[1]):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def _cancelled(exc: BaseException | None) -> bool:
    """Whether ``exc`` is asyncio's or trio's cancellation (trio only if it is loaded)."""
    if isinstance(exc, asyncio.CancelledError):
        return True
    trio = sys.modules.get("trio")
    return trio is not None and isinstance(exc, trio.Cancelled)


_COREDIS_LOGGER = logging.getLogger("coredis")
if not any(isinstance(f, _CancelledConnectAttempt) for f in _COREDIS_LOGGER.filters):
    _COREDIS_LOGGER.addFilter(_CancelledConnectAttempt())

_FIRST_DELAY = 0.1
_MAX_DELAY = 2.0
_CONNECT_TIMEOUT = 5.0
_RESPONSE_TIMEOUT = 10.0
_SUBSCRIBE_TIMEOUT = 5.0
_ID = re.compile(rb"\d+-\d+")
_U64 = 2**64 - 1

# KEYS[1]: the stream (history) or the sequence key (none). ARGV: pub/sub channel,
# payload, history length (0: none), history age in ms (0: none).
_PUBLISH = """
local id
if tonumber(ARGV[3]) > 0 then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'p', ARGV[2])
  local age = tonumber(ARGV[4])
  if age > 0 then
    local ms = tonumber(string.match(id, '^(%d+)'))
    redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d', ms - age))
    redis.call('PEXPIRE', KEYS[1], age)
  end
else
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local n = 0
  local last = redis.call('GET', KEYS[1])
  if last then
    local last_ms, last_n = string.match(last, '^(%d+)-(%d+)$')
    if ms <= tonumber(last_ms) then
      ms = tonumber(last_ms)
      n = tonumber(last_n) + 1
    end
  end
  id = string.format('%d-%d', ms, n)
  redis.call('SET', KEYS[1], id, 'PX', 60000)
end
redis.call('PUBLISH', ARGV[1], id .. ' ' .. ARGV[2])
return id
"""

# KEYS[1]: the stream. ARGV: start ("(<id>" or "-"), newest entries to return (0: all),
# history age in ms (0: none). Entries come newest first.
_HISTORY = """
local entries
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('XREVRANGE', KEYS[1], '+', ARGV[1], 'COUNT', ARGV[2])
else
  entries = redis.call('XREVRANGE', KEYS[1], '+', ARGV[1])
end
local age = tonumber(ARGV[3])
if age == 0 then
  return entries
end
local now = redis.call('TIME')
local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - age
local kept = {}
for _, entry in ipairs(entries) do
  if tonumber(string.match(entry[1], '^(%d+)')) >= oldest then
    kept[#kept + 1] = entry
  end
end
return kept
"""


@dataclass(slots=True)
class _Listening:
    """What the backend knows of one listened channel."""

    delivered: str | None = None
    """The id of the last message delivered."""
    delivered_key: tuple[int, ...] = ()
    start: str | None = None
    """The newest id in history when listening began: the gap-fill starts after it if
    nothing was delivered yet."""


class RedisBackend:
    """Channels across processes through Redis (pub/sub, and streams for history).

    ::

        hub = plait.channels.Hub(RedisBackend("redis://127.0.0.1:6379", history=100))

    Message ids are ``"<milliseconds>-<n>"`` from the Redis server's clock, growing
    per channel in the order Redis delivers messages, whichever process published
    them. A lost connection is retried with backoff; with history, what was published
    meanwhile on the listened channels is delivered once it is back. Needs Redis 6.2
    or later.

    Args:
        url: Where Redis is: ``redis://[:password@]host[:port][/db]``, ``rediss://``
            or ``unix://``; query arguments such as ``?stream_timeout=5`` tune the
            connection.
        history: Messages kept per channel for subscribers that resume with
            ``since=`` (0: none). Trimming is approximate, so Redis may keep a few
            more, but a resume returns at most this many.
        history_age: Seconds a kept message stays (``None``: until pushed out).
        key_prefix: Put before every Redis key and pub/sub channel name.
        presence_ttl: Seconds a process's presence entries outlive its last heartbeat
            (it beats every third of that): a process that dies without cleaning up
            (SIGKILL) has its entries removed, and their leaves published, within
            ``presence_ttl + presence_sweep`` seconds.
        presence_sweep: Seconds between two sweeps for the entries of processes that
            are gone (``None``: half of ``presence_ttl``).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        history: int = 0,
        history_age: float | None = None,
        key_prefix: str = "plait:",
        presence_ttl: float = 10.0,
        presence_sweep: float | None = None,
    ) -> None:
        if history < 0:
            raise ValueError("history must be 0 or more")
        if history_age is not None and history_age <= 0:
            raise ValueError("history_age must be positive, or None")
        if not presence_ttl > 0:
            raise ValueError("presence_ttl must be positive")
        if presence_sweep is not None and not presence_sweep > 0:
            raise ValueError("presence_sweep must be positive, or None")
        self.presence_ttl = presence_ttl
        self.presence_sweep = presence_sweep if presence_sweep is not None else presence_ttl / 2
        self.url = url
        self.history_length = history
        self.history_age = history_age
        self.key_prefix = key_prefix
        self._age_ms = max(1, round(history_age * 1000)) if history_age is not None else 0
        self._prefix = key_prefix.encode()
        self._client: coredis.Redis[bytes] | None = None
        self._pubsub: coredis.patterns.pubsub.PubSub[bytes] | None = None
        self._publish_script: coredis.commands.Script[bytes] | None = None
        self._history_script: coredis.commands.Script[bytes] | None = None
        self._deliver: Deliver | None = None
        self._lost: Lost | None = None
        self._listening: dict[str, _Listening] = {}
        self._reconnects = 0
        self._recovered = 0
        self._gaps = 0

    async def run(self, deliver: Deliver, lost: Lost, *, task_status: TaskStatus[None]) -> None:
        """Receive the listened channels and deliver their messages, until cancelled.

        Raises:
            ChannelUnavailable: Redis could not be reached at start. Later losses of
                the connection are retried with backoff, never raised.
        """
        if self._client is not None:
            raise RuntimeError("this RedisBackend is already running")
        client = coredis.Redis.from_url(
            self.url,
            connect_timeout=_CONNECT_TIMEOUT,
            stream_timeout=_RESPONSE_TIMEOUT,
            # A publish retried after a lost reply could go out twice, with two ids.
            retry_policy=coredis.retry.NoRetryPolicy(),
        )
        async with client:
            self._client = client
            self._publish_script = client.register_script(_PUBLISH)
            self._history_script = client.register_script(_HISTORY)
            self._deliver, self._lost = deliver, lost
            try:
                failure = await self._serve(client, task_status)
            finally:
                self._client = self._deliver = self._lost = None
                self._publish_script = self._history_script = None
        # Raised out here, not through coredis's task group, which would wrap it.
        raise failure

    async def _serve(
        self, client: coredis.Redis[bytes], task_status: TaskStatus[None]
    ) -> ChannelUnavailable:
        """Serve until cancelled; return the error to raise if Redis is unreachable at start."""
        started = False
        delay = _FIRST_DELAY
        while True:
            try:
                async with client.pubsub(
                    ignore_subscribe_messages=True,
                    retry_policy=None,  # reconnecting here is how we know to gap-fill
                    subscription_timeout=_SUBSCRIBE_TIMEOUT,
                ) as pubsub:
                    self._pubsub = pubsub
                    try:
                        await self._resume(pubsub, reconnected=started)
                        if started:
                            self._reconnects += 1
                            logger.warning("reconnected to Redis at %s", redacted(self.url))
                        else:
                            task_status.started()
                            started = True
                        delay = _FIRST_DELAY
                        await self._receive(pubsub)
                    finally:
                        self._pubsub = None
            except Exception as exc:
                if not is_failure(exc):
                    raise
                if not started:
                    failure = ChannelUnavailable(
                        f"cannot reach Redis at {redacted(self.url)}: {describe(exc)}"
                    )
                    failure.__cause__ = exc
                    return failure
                log = logger.warning if delay == _FIRST_DELAY else logger.debug
                log("lost Redis at %s (%s); reconnecting", redacted(self.url), describe(exc))
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _MAX_DELAY)

    async def _resume(
        self, pubsub: coredis.patterns.pubsub.PubSub[bytes], *, reconnected: bool
    ) -> None:
        # Snapshot and SUBSCRIBE with no checkpoint between: a channel listened to
        # after this point is subscribed by `listen` itself on this connection.
        channels = list(self._listening)
        if channels:
            await pubsub.subscribe(*(self._topic(channel) for channel in channels))
        if not (reconnected and self.history_length):
            return
        gaps: list[str] = []
        for channel in channels:
            state = self._listening.get(channel)
            after = (state.delivered or state.start) if state is not None else None
            if after is None:
                continue  # listened while Redis was down: nothing to resume from
            if not await self._kept_after(channel, self.id_key(after)):
                # Some of what was published meanwhile is gone: say so before the rest.
                gaps.append(channel)
                lost = self._lost
                if lost is not None and channel in self._listening:
                    lost(channel)
            for message_id, payload in await self._stored(channel, after, limit=0):
                if self._dispatch(channel, message_id, payload):
                    self._recovered += 1
        if gaps:
            self._gaps += len(gaps)
            shown = ", ".join(repr(channel) for channel in gaps[:5])
            logger.warning(
                "Redis at %s no longer holds everything published while the connection "
                "was down on %d channel(s) (%s): their subscribers are told (recovered=False)",
                redacted(self.url),
                len(gaps),
                shown + (", ..." if len(gaps) > 5 else ""),
            )

    async def _receive(self, pubsub: coredis.patterns.pubsub.PubSub[bytes]) -> None:
        async for topic, frame in published(pubsub):
            message_id, _, payload = frame.partition(b" ")
            if not topic.startswith(self._prefix) or not _ID.fullmatch(message_id):
                logger.debug("ignored a message that plait did not publish on %r", topic)
                continue
            channel = topic[len(self._prefix) :].decode()
            self._dispatch(channel, message_id.decode(), payload)

    def _dispatch(self, channel: str, message_id: str, payload: bytes) -> bool:
        """Deliver a message unless its channel is not listened or it was delivered."""
        state = self._listening.get(channel)
        deliver = self._deliver
        if state is None or deliver is None:
            return False
        key = self.id_key(message_id)
        if key <= state.delivered_key:
            return False
        state.delivered, state.delivered_key = message_id, key
        try:
            deliver(channel, message_id, payload)
        except Exception:
            # One undecodable message must not stop every channel of this process.
            logger.exception("could not deliver message %s of channel %r", message_id, channel)
        return True

    async def publish(self, channel: str, payload: bytes) -> str:
        """Publish ``payload`` on ``channel`` (and keep it, with history).

        Returns:
            The message's id, ``"<milliseconds>-<n>"``.

        Raises:
            ChannelUnavailable: Redis could not be reached or refused the command.
        """
        script = self._publish_script
        if script is None:
            raise RuntimeError("the Redis backend is not running")
        key = self._key("history:" if self.history_length else "seq:", channel)
        args = (self._topic(channel), payload, self.history_length, self._age_ms)
        with converted(f"could not publish on {channel!r}"):
            reply: object = await script(keys=[key], args=args)
        if not isinstance(reply, bytes):
            raise ChannelUnavailable(f"Redis answered {reply!r} to a publish")
        return reply.decode()

    async def listen(self, channel: str) -> None:
        """SUBSCRIBE to ``channel`` (at once, or when the connection is back)."""
        if channel in self._listening:
            return
        state = self._listening[channel] = _Listening()
        try:
            client = self._client
            if self.history_length and client is not None:
                try:
                    newest = await client.xrevrange(self._key("history:", channel), count=1)
                except Exception as exc:
                    if not is_failure(exc):
                        raise
                    logger.debug("no history position for %r: %s", channel, describe(exc))
                else:
                    state.start = _text(newest[0].identifier) if newest else "0-0"
            await self._command(channel, subscribe=True)
        except BaseException:
            # Not listening after all (cancelled, or Redis refused): a later listen()
            # must send the SUBSCRIBE rather than find the channel marked as done.
            if self._listening.get(channel) is state:
                del self._listening[channel]
            raise

    async def unlisten(self, channel: str) -> None:
        """UNSUBSCRIBE from ``channel``."""
        if self._listening.pop(channel, None) is not None:
            await self._command(channel, subscribe=False)

    async def _command(self, channel: str, *, subscribe: bool) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return  # `_resume` subscribes to what is listened once connected
        try:
            if subscribe:
                await pubsub.subscribe(self._topic(channel))
            else:
                await pubsub.unsubscribe(self._topic(channel))
        except Exception as exc:
            # The connection is going: `_resume` will act on `_listening` once back.
            if not is_failure(exc):
                raise
            logger.debug("(un)subscribing %r failed: %s", channel, describe(exc))

    async def history_covers(self, channel: str, after: str) -> bool:
        """Whether the history still holds everything after ``after``.

        Conservative, since Redis does not say which ids a trimming removed: the answer
        is True when the message ``after`` names is still kept or is newer than all
        that is kept (or ``after`` is ``0-0`` and the stream never lost an entry), and
        at most ``history`` messages came after it (what :meth:`history` replays).
        So a resume from before a trim, or from before a Redis restart that lost the
        history (no persistence), says False; one from just before the oldest kept
        message may say False although nothing was lost in between. Without history
        nothing can be recovered: False.

        Raises:
            ChannelUnavailable: Redis could not be reached or refused the command.
        """
        if not self.history_length:
            return False
        position = self.id_key(after)
        with converted(f"could not read the history of {channel!r}"):
            if not await self._kept_after(channel, position):
                return False
            # history() replays the newest ``history`` messages after ``after``: more
            # than that were missed (the approximate trimming keeps some extra) is a
            # gap too.
            client = self._running_client(channel)
            missed = await client.xrange(
                self._key("history:", channel),
                start=f"({_canonical(position)}",
                count=self.history_length + 1,
            )
        return len(missed) <= self.history_length

    async def _kept_after(self, channel: str, position: tuple[int, ...]) -> bool:
        """Whether the stream still holds every message after ``position`` (see
        :meth:`history_covers`; conservative). Redis's errors are raised as they are."""
        client = self._running_client(channel)
        key = self._key("history:", channel)
        if not await client.exists([key]):
            return position == (0, 0)  # nothing kept: only "everything" is complete
        info: Mapping[str, Any] = await client.xinfo_stream(key)
        first = info.get("first-entry")
        if first is not None and position < self.id_key(_text(first.identifier)):
            never_trimmed = int(info.get("entries-added") or 0) <= int(info.get("length") or 0)
            return position == (0, 0) and never_trimmed
        if first is None and int(info.get("entries-added") or 0):
            # Emptied by the age limit: kept nothing after ``position`` only if nothing
            # newer was ever added.
            last = self.id_key(_text(info.get("last-generated-id") or "0-0"))
            return last <= position
        return True

    def _running_client(self, channel: str) -> coredis.Redis[bytes]:
        client = self._client
        if client is None:
            raise ChannelUnavailable(f"could not read the history of {channel!r}")
        return client

    async def history(self, channel: str, after: str | None) -> Sequence[StoredMessage]:
        """The kept messages of ``channel`` after ``after``, oldest first.

        Raises:
            ValueError: ``after`` is not a message id.
            ChannelUnavailable: Redis could not be reached or refused the command.
        """
        if not self.history_length:
            return []
        with converted(f"could not read the history of {channel!r}"):
            return await self._stored(channel, after, limit=self.history_length)

    async def _stored(self, channel: str, after: str | None, *, limit: int) -> list[StoredMessage]:
        script = self._history_script
        if script is None:
            raise RuntimeError("the Redis backend is not running")
        start = "-" if after is None else f"({_canonical(self.id_key(after))}"
        key = self._key("history:", channel)
        reply: object = await script(keys=[key], args=(start, limit, self._age_ms))
        stored: list[StoredMessage] = []
        for entry in reply if isinstance(reply, list) else ():
            match entry:  # [id, [b"p", payload]], as the publish script wrote it
                case [bytes(message_id), [b"p", bytes(payload)]]:
                    stored.append((message_id.decode(), payload))
        stored.reverse()
        return stored

    def presence_store(self) -> RedisPresence:
        """A store for the hub's presence, shared through this Redis.

        It has a connection of its own, made when the hub first uses presence.
        """
        from ._redis_presence import RedisPresence

        return RedisPresence(
            self.url, key_prefix=self.key_prefix, ttl=self.presence_ttl, sweep=self.presence_sweep
        )

    def id_key(self, message_id: str) -> tuple[int, ...]:
        """``"1700000000000-3"`` sorts as ``(1700000000000, 3)``.

        Raises:
            ValueError: ``message_id`` is not ``<milliseconds>-<n>`` (or ``<milliseconds>``),
                each a number Redis takes (below 2**64).
        """
        first, _, second = message_id.partition("-")
        if not (_digits(first) and (not second or _digits(second))):
            raise ValueError(f"not a message id: {message_id!r}")
        key = (int(first), int(second or 0))
        # Redis's stream ids are two unsigned 64-bit numbers, and a resume reads after
        # the id: the largest one has nothing after it, and Redis refuses it there.
        if max(key) > _U64 or key == (_U64, _U64):
            raise ValueError(f"not a message id: {message_id!r}")
        return key

    def statistics(self) -> dict[str, int]:
        """Counters: ``channels`` listened to, ``reconnects`` after a lost connection,
        messages ``recovered`` from history after a reconnect, and ``gaps``: channels
        whose history no longer held all that was published while the connection was
        down (their subscribers were told)."""
        return {
            "channels": len(self._listening),
            "reconnects": self._reconnects,
            "recovered": self._recovered,
            "gaps": self._gaps,
        }

    def _topic(self, channel: str) -> bytes:
        return self._prefix + channel.encode()

    def _key(self, kind: str, channel: str) -> str:
        return f"{self.key_prefix}{kind}{channel}"


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode()


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _canonical(key: tuple[int, ...]) -> str:
    return "-".join(map(str, key))


_FAILURES = (coredis.exceptions.RedisError, TimeoutError, OSError)


def is_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception of a group) is Redis failing, not a bug."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_failure(inner) for inner in exc.exceptions)
    return isinstance(exc, _FAILURES)


def describe(exc: BaseException) -> str:
    """The first error's text (through exception groups), for messages and logs."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


@contextmanager
def converted(action: str) -> Iterator[None]:
    """Raise Redis's failures as :class:`ChannelUnavailable`."""
    try:
        yield
    except Exception as exc:
        if not is_failure(exc):
            raise
        raise ChannelUnavailable(f"{action}: {describe(exc)}") from exc


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
