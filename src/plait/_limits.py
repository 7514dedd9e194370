"""Per-connection rate limits: a token bucket on incoming messages, kept by the reader.

The reader (:mod:`plait._reader`) takes a token for every data message before it queues
the message for the handler and before anything decodes it, so that a flood costs one
clock read and a few float operations a message. The bucket is kept in its GCRA form
(the "theoretical arrival time" of the next message): one float of state, O(1), the same
decisions as a bucket of ``burst`` tokens refilled at ``messages / per`` a second.
"""

# No ``from __future__ import annotations``: RateLimit reports ``plait`` as its module,
# where ``OnExceed`` is not a name, so its annotations are evaluated here, once.
import math
from dataclasses import dataclass
from typing import Final, Literal

import anyio

__all__ = ("Limiter", "OnExceed", "RateLimit")

OnExceed = Literal["close", "drop", "reply"]
"""What a message over the rate limit does: ``"close"`` the connection with 1008,
``"drop"`` it (counted), or ``"reply"`` with a small JSON error and drop it."""

_SLACK: Final = 1e-3
"""A thousandth of a token of slack, so that float rounding never costs a burst its
last message."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A limit on the messages one connection may send: a token bucket.

    A connection starts with ``burst`` tokens; each data message from the client takes
    one, and tokens come back at ``messages`` per ``per`` seconds, up to ``burst``. A
    message that finds no token is over the limit, and ``on_exceed`` says what happens:

    - ``"close"`` (default): close the connection with 1008 and the reason
      ``rate limit exceeded``. Every client understands a close, whatever protocol it
      speaks on the socket.
    - ``"drop"``: drop the message unseen, and go on. It is counted in
      :attr:`ConnectionStatistics.messages_limited`.
    - ``"reply"``: drop it, and tell the client with a text message
      ``{"error": "rate limit exceeded", "retry_after": <seconds>, "detail": ...}``.
      Replies are bounded too: at most one per ``per / messages`` seconds, and none
      while the outbound queue is full, so a flood never makes the server send more
      than the limit lets through.

    The check comes before the message is queued for the handler and before anything
    decodes it. The heartbeat's ``pong`` (see :class:`Heartbeat`) takes no token: it
    answers the server, and the engine consumes it as cheaply as a dropped message.
    The first message over the limit is logged at INFO on ``plait._connection``, and so
    is a summary when the connection ends; never one line per message.

    Args:
        messages: Tokens that come back every ``per`` seconds: the steady rate.
        per: The period of ``messages``, in seconds.
        burst: The most tokens the bucket holds, and so the most messages accepted at
            once; ``None``: ``messages`` (at least 1).
        on_exceed: ``"close"``, ``"drop"`` or ``"reply"``.

    Raises:
        ValueError: ``messages`` or ``per`` is not a positive finite number, ``burst``
            is below 1, or ``on_exceed`` is unknown.
    """

    messages: float
    per: float = 1.0
    burst: float | None = None
    on_exceed: OnExceed = "close"

    def __post_init__(self) -> None:
        for name in ("messages", "per"):
            value = getattr(self, name)
            if not _finite_number(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, not {value!r}")
        if self.burst is not None and (not _finite_number(self.burst) or self.burst < 1):
            raise ValueError(f"burst must be a number of at least 1, not {self.burst!r}")
        if self.on_exceed not in ("close", "drop", "reply"):
            raise ValueError(
                f"on_exceed must be 'close', 'drop' or 'reply', not {self.on_exceed!r}"
            )

    @property
    def capacity(self) -> float:
        """The most tokens the bucket holds: ``burst``, or ``messages`` (at least 1)."""
        return self.burst if self.burst is not None else max(1.0, self.messages)

    def describe(self) -> str:
        """The limit in words, for the log and the reply: ``20 messages per 1 s, burst 40``."""
        noun = "message" if self.messages == 1 else "messages"
        return f"{self.messages:g} {noun} per {self.per:g} s, burst {self.capacity:g}"


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class Limiter:
    """One connection's bucket; made by the reader when the connection has a limit."""

    __slots__ = (
        "_interval",
        "_now",
        "_reply_at",
        "_tat",
        "_tolerance",
        "closes",
        "limit",
        "replies",
        "replying",
    )

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.closes = limit.on_exceed == "close"
        self.replying = limit.on_exceed == "reply"
        self._interval = limit.per / limit.messages  # seconds for one token to come back
        # A message is accepted while the next theoretical arrival time stays within
        # ``capacity`` intervals of now: a bucket of ``capacity`` tokens.
        self._tolerance = (limit.capacity + _SLACK) * self._interval
        self._tat = -math.inf  # a full bucket
        self._now = -math.inf
        self._reply_at = -math.inf
        self.replies = 0

    def take(self) -> bool:
        """Take a token for a message that just arrived; False if there is none."""
        self._now = now = anyio.current_time()
        tat = self._tat
        if tat < now:
            tat = now
        tat += self._interval
        if tat - now > self._tolerance:
            return False
        self._tat = tat
        return True

    def reply_due(self) -> bool:
        """Whether the message :meth:`take` just refused gets a reply: with ``"reply"``,
        at most one per token interval. True takes that turn."""
        if not self.replying or self._now < self._reply_at:
            return False
        self._reply_at = self._now + self._interval
        return True

    def reply(self) -> str:
        """The reply's text: the limit, and when a message would be accepted again."""
        self.replies += 1
        wait = max(0.0, self._tat + self._interval - self._tolerance - self._now)
        retry_after = math.ceil(wait * 1000) / 1000  # rounded up to the millisecond
        detail = self.limit.describe()
        return (
            f'{{"error":"rate limit exceeded","retry_after":{retry_after},'
            f'"detail":"at most {detail}"}}'
        )
