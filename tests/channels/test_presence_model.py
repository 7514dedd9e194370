"""The presence model without I/O: entries, diffs that compose, states that apply them."""

from __future__ import annotations

from typing import Any

import pytest

from plait.channels import InvalidPresence, PresenceDiff, PresenceMember, PresenceState
from plait.channels._presence_model import Change, Entry, decode_entry, encode_entry


def entry(key: str, ref: str, **meta: Any) -> Entry:
    return key, {"ref": ref, **meta}


def change(joins: list[Entry], leaves: list[Entry], counts: dict[str, int]) -> Change:
    return Change({e[1]["ref"]: e for e in joins}, {e[1]["ref"]: e for e in leaves}, dict(counts))


def test_an_entry_round_trips_and_junk_is_not_one() -> None:
    raw, meta = encode_entry("ada", {"tab": 1}, max_key=10, max_meta=100)
    assert raw == b'["ada",{"tab":1}]'
    assert meta == {"tab": 1}
    assert decode_entry("p:1", raw) == ("ada", {"ref": "p:1", "tab": 1})
    for junk in (b"", b"[1, {}]", b'["ada", []]', b"{}", b"[" * 20000):
        assert decode_entry("p:1", junk) is None
    with pytest.raises(InvalidPresence):
        encode_entry("ada", {"tab": 1}, max_key=2, max_meta=100)


def test_a_join_then_its_leave_compose_to_nothing() -> None:
    ada = entry("ada", "p:1")
    joined = change([ada], [], {"ada": 1})
    left = change([], [ada], {"ada": 0})
    both = joined.then(left)
    assert both.joins == {}
    assert both.leaves == {}
    assert both.diff("room") == PresenceDiff(channel="room", joins={}, leaves={})


def test_composed_changes_keep_the_last_count_and_the_net_metas() -> None:
    ada1, ada2, bob = entry("ada", "p:1"), entry("ada", "p:2", tab=2), entry("bob", "q:1")
    steps = [
        change([ada2], [], {"ada": 2}),  # a second tab
        change([bob], [ada1], {"ada": 1, "bob": 1}),
        change([], [ada2], {"ada": 0}),
    ]
    total = steps[0].then(steps[1]).then(steps[2])
    diff = total.diff("room")
    assert diff.joins == {"bob": PresenceMember([{"ref": "q:1"}], 1)}
    assert diff.leaves == {"ada": PresenceMember([{"ref": "p:1"}], 0)}
    # applying the composed diff gives what applying each one gives
    start = PresenceState(channel="room", presences={"ada": PresenceMember([ada1[1]], 1)})
    one_by_one = start
    for step in steps:
        one_by_one = one_by_one.apply(step.diff("room"))
    assert start.apply(diff) == one_by_one
    assert one_by_one.presences == {"bob": PresenceMember([{"ref": "q:1"}], 1)}


def test_a_leave_and_the_same_entry_back_compose_to_nothing() -> None:
    ada = entry("ada", "p:1")
    gone = change([], [ada], {"ada": 0})
    back = change([ada], [], {"ada": 1})  # written again after Redis came back
    assert gone.then(back).diff("room") == PresenceDiff(channel="room", joins={}, leaves={})


def test_an_update_applies_as_a_leave_then_a_join_under_one_key() -> None:
    online, away = entry("ada", "p:1", status="online"), entry("ada", "p:2", status="away")
    state = PresenceState(channel="room", presences={"ada": PresenceMember([online[1]], 1)})
    updated = state.apply(change([away], [online], {"ada": 1}).diff("room"))
    assert updated.presences == {"ada": PresenceMember([away[1]], 1)}
    assert state.presences["ada"].metas == [online[1]]  # apply makes a new state
