"""The engine's bounded channel, on both backends."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import pytest
from anyio import ClosedResourceError, EndOfStream, WouldBlock

from plait._channel import Channel

pytestmark = pytest.mark.anyio


async def test_fifo_and_bound() -> None:
    channel: Channel[int] = Channel(2)
    channel.send_nowait(1)
    channel.send_nowait(2)
    with pytest.raises(WouldBlock):
        channel.send_nowait(3)
    assert channel.statistics().buffered == 2
    assert [await channel.receive(), await channel.receive()] == [1, 2]
    with pytest.raises(WouldBlock):
        channel.receive_nowait()


async def test_sender_waits_until_there_is_room() -> None:
    channel: Channel[int] = Channel(1)
    sent: list[int] = []

    async def sender() -> None:
        for i in range(5):
            await channel.send(i)
            sent.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        await anyio.wait_all_tasks_blocked()
        assert sent == [0]  # one fits, the second send waits
        assert channel.statistics().waiting_senders == 1
        received = [await channel.receive() for _ in range(5)]
    assert received == [0, 1, 2, 3, 4]


async def test_receiver_waits_and_is_woken() -> None:
    channel: Channel[str] = Channel(4)
    got: list[str] = []

    async def receiver() -> None:
        got.append(await channel.receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver)
        await anyio.wait_all_tasks_blocked()
        assert channel.statistics().waiting_receivers == 1
        await channel.send("x")
    assert got == ["x"]


async def test_close_drains_then_ends() -> None:
    channel: Channel[int] = Channel(4)
    await channel.send(1)
    channel.close()
    with pytest.raises(ClosedResourceError):
        await channel.send(2)
    with pytest.raises(ClosedResourceError):
        channel.force_nowait(2)
    assert await channel.receive() == 1
    with pytest.raises(EndOfStream):
        await channel.receive()


async def test_close_wakes_blocked_senders_and_receivers() -> None:
    full: Channel[int] = Channel(1)
    full.send_nowait(0)
    empty: Channel[int] = Channel(1)
    outcomes: list[str] = []

    async def blocked_sender() -> None:
        with pytest.raises(ClosedResourceError):
            await full.send(1)
        outcomes.append("sender")

    async def blocked_receiver() -> None:
        with pytest.raises(EndOfStream):
            await empty.receive()
        outcomes.append("receiver")

    async with anyio.create_task_group() as tg:
        tg.start_soon(blocked_sender)
        tg.start_soon(blocked_receiver)
        await anyio.wait_all_tasks_blocked()
        full.close()
        empty.close()
    assert sorted(outcomes) == ["receiver", "sender"]


async def test_force_nowait_goes_past_the_bound_in_order() -> None:
    channel: Channel[str] = Channel(1)
    channel.send_nowait("data")
    channel.force_nowait("close")
    assert [channel.receive_nowait(), channel.receive_nowait()] == ["data", "close"]


async def test_cancelled_receiver_leaves_no_waiter_behind() -> None:
    channel: Channel[int] = Channel(1)
    with anyio.move_on_after(0.01):
        await channel.receive()
    assert channel.statistics().waiting_receivers == 0
    await channel.send(7)
    assert await channel.receive() == 7


async def test_only_a_call_that_waits_is_a_cancellation_point() -> None:
    channel: Channel[int] = Channel(1)
    channel.send_nowait(1)
    with anyio.CancelScope() as scope:
        scope.cancel()
        # completes without waiting: like trio's *_nowait, not a cancellation point
        assert await channel.receive() == 1
        await channel.send(2)
        # must wait (full): cancelled, and nothing is queued
        await channel.send(3)
        raise AssertionError("not reached")  # pragma: no cover
    assert scope.cancelled_caught
    assert channel.receive_nowait() == 2
    with anyio.CancelScope() as scope:
        scope.cancel()
        await channel.receive()  # must wait (empty): cancelled
    assert scope.cancelled_caught
    assert channel.statistics() == (0, 1, 0, 0)


async def test_a_woken_then_cancelled_receiver_loses_no_item() -> None:
    # A cancel scope cannot take a wake-up back, on either backend: the woken receiver
    # takes the item, and the cancellation lands at its next checkpoint.
    channel: Channel[int] = Channel(4)
    got: list[tuple[str, int]] = []
    first_scope = anyio.CancelScope()

    async def first() -> None:
        with first_scope:
            got.append(("first", await channel.receive()))

    async def second() -> None:
        with contextlib.suppress(EndOfStream):
            got.append(("second", await channel.receive()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        channel.send_nowait(5)  # wakes the first receiver ...
        first_scope.cancel()  # ... and cancels it before it runs
        await anyio.wait_all_tasks_blocked()
        assert channel.statistics().waiting_receivers == 1  # the second still waits
        channel.close()
    assert got == [("first", 5)]
    assert not first_scope.cancelled_caught


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_receiver_woken_then_cancelled_by_task_cancel_passes_the_item_on(
    anyio_backend: str,
) -> None:
    # asyncio's Task.cancel() does land on a task whose wake-up is already scheduled:
    # that receiver never takes the item, so it must wake the next one.
    import asyncio

    channel: Channel[int] = Channel(4)
    got: list[tuple[str, object]] = []
    tasks: list[asyncio.Task[Any]] = []

    async def first() -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        try:
            got.append(("first", await channel.receive()))
        except asyncio.CancelledError:
            got.append(("first", "cancelled"))
            task.uncancel()  # handled here: the task group must not see it

    async def second() -> None:
        got.append(("second", await channel.receive()))

    with anyio.move_on_after(1):  # a lost wake-up leaves the second waiting
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            channel.send_nowait(5)  # wakes the first receiver ...
            tasks[0].cancel()  # ... and cancels it before it runs
    assert got == [("first", "cancelled"), ("second", 5)]
    assert channel.statistics() == (0, 4, 0, 0)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Channel(0)
