"""What presence looks like: its shapes, its limits, and changes that compose; no I/O.

The model is Phoenix Presence's: presence is per *key* (a user id, say), and each key
has one *meta* per tracking (a connection, a tab), told apart by a ``ref``. What a
client sees is a full state first, then diffs of joins and leaves that it applies in
order. Each key also carries a ``count``: how many trackings it has after the change,
so that two tabs of one user are one presence with a count of two.
"""

# No `from __future__ import annotations`: the fields' annotations are evaluated here,
# so typing.get_type_hints() resolves them from plait.channels too (no Literal there).
import logging
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

from .._codec import decode_json, encode_json
from .._exceptions import MessageDecodeError, PlaitError

__all__ = (
    "MAX_ENTRIES",
    "MAX_KEY",
    "MAX_META",
    "Change",
    "Entry",
    "InvalidPresence",
    "PresenceDiff",
    "PresenceEvent",
    "PresenceFull",
    "PresenceMember",
    "PresenceState",
    "decode_entry",
    "encode_entry",
    "members",
)

logger = logging.getLogger(__name__)

MAX_KEY: Final = 256
"""The longest key, in UTF-8 bytes."""
MAX_META: Final = 4096
"""The largest meta, in bytes of JSON."""
MAX_ENTRIES: Final = 10_000
"""Trackings per channel in one process."""


class InvalidPresence(PlaitError, ValueError):
    """A key or a meta that presence does not take.

    The key must be a non-empty string of at most ``max_key`` UTF-8 bytes; the meta a
    JSON object (a dict, a msgspec Struct, a dataclass...) of at most ``max_meta`` bytes
    once encoded, without a ``"ref"`` field (plait sets that one). Raised before
    anything is tracked. Out of a handler or a stream it closes the connection with
    1008.
    """

    close_code = 1008
    close_reason = "invalid presence"


class PresenceFull(PlaitError, ValueError):
    """This process already tracks ``max_entries`` presences on the channel.

    Raised by ``track()`` before anything is tracked. Out of a handler or a stream it
    closes the connection with 1013 (try again later).
    """

    close_code = 1013
    close_reason = "presence full, try again later"


@dataclass(frozen=True, slots=True)
class PresenceMember:
    """One key's presence: a meta per tracking, and how many there are.

    In :attr:`PresenceDiff.joins` and :attr:`PresenceDiff.leaves`, ``metas`` holds only
    the metas that joined or left, and ``count`` is the key's count *after* the diff:
    0 in ``leaves`` means the key is gone.
    """

    metas: list[dict[str, Any]]
    """The metas, each the tracked meta with its ``"ref"``."""
    count: int
    """How many trackings the key has."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceState:
    """Everyone on a channel: the first event of a presence subscription.

    Yielded from a stream it reaches the client as the JSON
    ``{"type": "presence_state", "channel": ..., "presences": {key: {"metas": [...],
    "count": n}}}``.
    """

    # Always "presence_state": tells a client this event from a diff. Shown in the JSON
    # above rather than as an attribute of its own, which Sphinx would confuse with
    # the builtin ``type`` in signatures.
    type: Literal["presence_state"] = field(default="presence_state", init=False)
    channel: str
    """The channel."""
    presences: dict[str, PresenceMember]
    """Each present key with its metas and count."""

    def apply(self, diff: "PresenceDiff") -> "PresenceState":
        """The state after ``diff``: its leaves taken out (by ``ref``), then its joins
        added. A client does the same with the JSON."""
        presences = dict(self.presences)
        for key in diff.leaves.keys() | diff.joins.keys():
            current = presences.get(key)
            metas = current.metas if current is not None else []
            left = diff.leaves.get(key)
            if left is not None:
                gone = {meta["ref"] for meta in left.metas}
                metas = [meta for meta in metas if meta["ref"] not in gone]
            joined = diff.joins.get(key)
            if joined is not None:
                metas = [*metas, *joined.metas]
            if metas:
                presences[key] = PresenceMember(metas, len(metas))
            else:
                presences.pop(key, None)
        return PresenceState(channel=self.channel, presences=presences)


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceDiff:
    """Who joined and who left a channel, since the state or the diff before.

    Apply it by taking out the metas of ``leaves`` (by ``ref``), then adding those of
    ``joins``; each key's ``count`` is its count after the diff. A second tracking of a
    key is a join of a meta with a count of 2, not a new key; an update of a meta is
    the old meta leaving and the new one (with a new ``ref``) joining. Yielded from a
    stream it reaches the client as the JSON ``{"type": "presence_diff", "channel":
    ..., "joins": {...}, "leaves": {...}}``.
    """

    type: Literal["presence_diff"] = field(default="presence_diff", init=False)  # see above
    channel: str
    """The channel."""
    joins: dict[str, PresenceMember]
    """The keys with metas that joined, and each key's count after the diff."""
    leaves: dict[str, PresenceMember]
    """The keys with metas that left, and each key's count after the diff."""


PresenceEvent: TypeAlias = PresenceState | PresenceDiff
"""What a presence subscription yields: one :class:`PresenceState`, then diffs."""

Entry = tuple[str, dict[str, Any]]
"""A decoded entry: its key, and its meta with the ``"ref"`` in it."""


def encode_entry(key: object, meta: object, *, max_key: int, max_meta: int) -> tuple[bytes, Any]:
    """Check ``key`` and ``meta`` and encode them as the JSON ``[key, meta]``.

    Returns:
        The encoded entry, and the meta as JSON data (a dict).

    Raises:
        InvalidPresence: The key or the meta is not one presence takes.
    """
    if not isinstance(key, str) or not key:
        raise InvalidPresence(f"a presence key is a non-empty string, not {_shown(key)}")
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        raise InvalidPresence("a presence key must be valid Unicode text") from None
    if size > max_key:
        raise InvalidPresence(f"a presence key is at most {max_key} bytes, not {size}")
    try:
        encoded = encode_json({} if meta is None else meta)
    except TypeError as exc:
        raise InvalidPresence(f"a presence meta must encode as JSON: {exc}") from None
    if len(encoded) > max_meta:
        raise InvalidPresence(f"a presence meta is at most {max_meta} bytes, not {len(encoded)}")
    if not encoded.startswith(b"{"):
        raise InvalidPresence(
            f"a presence meta is a JSON object (a dict, a Struct, a dataclass), not {_shown(meta)}"
        )
    data = decode_json(encoded)
    if "ref" in data:
        raise InvalidPresence("a presence meta has no 'ref' field: plait sets it")
    return b"[" + encode_json(key) + b"," + encoded + b"]", data


def _shown(value: object) -> str:
    return type(value).__name__ if not isinstance(value, str) else repr(value[:40])


def decode_entry(ref: str, raw: bytes) -> Entry | None:
    """The key and the meta (with ``ref`` in it) of an entry; None if it is not one."""
    try:
        data = decode_json(raw)
    except MessageDecodeError:
        data = None
    match data:
        case [str(key), dict(meta)]:
            return key, {"ref": ref, **meta}
    logger.debug("ignored a presence entry that plait did not write: %r", raw[:80])
    return None


def members(entries: dict[str, Entry]) -> dict[str, PresenceMember]:
    """Entries by ref grouped by key, each with its count."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for key, meta in entries.values():
        grouped.setdefault(key, []).append(meta)
    return {key: PresenceMember(metas, len(metas)) for key, metas in grouped.items()}


@dataclass(slots=True)
class Change:
    """One change of a channel's presence, as a hub applied it; shared by every
    subscriber, and composed with the next ones when a subscriber lags."""

    joins: dict[str, Entry]
    """Entries that joined, by ref."""
    leaves: dict[str, Entry]
    """Entries that left, by ref (applied before the joins)."""
    counts: dict[str, int]
    """Each key the change touched, with its count after it."""
    _diff: PresenceDiff | None = None

    def then(self, later: "Change") -> "Change":
        """This change followed by ``later``, as one change."""
        joins, leaves = dict(self.joins), dict(self.leaves)
        for ref, entry in later.leaves.items():
            if ref in joins:
                del joins[ref]  # joined and left: nobody needs to hear of it
            else:
                leaves[ref] = entry
        for ref, entry in later.joins.items():
            if leaves.get(ref) == entry:
                del leaves[ref]  # left and came back as it was (registered again)
            else:
                joins[ref] = entry
        return Change(joins, leaves, {**self.counts, **later.counts})

    def diff(self, channel: str) -> PresenceDiff:
        """The change as subscribers see it (built once)."""
        if self._diff is None:
            self._diff = PresenceDiff(
                channel=channel, joins=self._grouped(self.joins), leaves=self._grouped(self.leaves)
            )
        return self._diff

    def _grouped(self, entries: dict[str, Entry]) -> dict[str, PresenceMember]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for key, meta in entries.values():
            grouped.setdefault(key, []).append(meta)
        return {key: PresenceMember(metas, self.counts[key]) for key, metas in grouped.items()}
