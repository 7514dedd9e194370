"""plait._timers: callbacks at a time, in order, never after a cancel, never crashing the
loop, and on trio a task that lives only while a timer is pending."""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
import pytest
import sniffio

from _support import count_tasks
from plait._timers import call_at

pytestmark = pytest.mark.anyio


async def test_timers_run_in_the_order_of_their_times_and_a_cancelled_one_never() -> None:
    ran: list[str] = []
    now = anyio.current_time()
    call_at(now + 0.06, lambda: ran.append("third"))
    call_at(now + 0.02, lambda: ran.append("first"))
    cancelled = call_at(now + 0.03, lambda: ran.append("cancelled"))
    call_at(now + 0.04, lambda: ran.append("second"))
    cancelled.cancel()
    await anyio.sleep(0.1)
    assert ran == ["first", "second", "third"]


async def test_a_timer_set_from_a_callback_runs_at_its_own_time() -> None:
    ran: list[float] = []
    start = anyio.current_time()

    def again() -> None:
        ran.append(anyio.current_time() - start)
        if len(ran) < 3:
            call_at(anyio.current_time() + 0.02, again)

    call_at(start + 0.02, again)
    await anyio.sleep(0.15)
    assert len(ran) == 3
    assert ran == sorted(ran)
    assert ran[-1] >= 0.06


async def test_an_earlier_timer_set_later_still_runs_first() -> None:
    ran: list[str] = []
    now = anyio.current_time()
    call_at(now + 0.5, lambda: ran.append("late"))
    await anyio.sleep(0.01)  # the trio task now sleeps until the late one
    call_at(anyio.current_time() + 0.01, lambda: ran.append("early"))
    await anyio.sleep(0.05)
    assert ran == ["early"]


async def test_a_failing_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def fail() -> None:
        raise RuntimeError("a callback's own error")

    now = anyio.current_time()
    call_at(now + 0.01, fail)
    call_at(now + 0.02, lambda: ran.append("after"))
    await anyio.sleep(0.05)
    assert ran == ["after"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "a timer's callback failed"
    ]


async def test_trios_timer_task_lives_only_while_a_timer_is_pending() -> None:
    before = count_tasks()
    ran: list[str] = []
    timer = call_at(anyio.current_time() + 10, lambda: ran.append("never"))
    await anyio.lowlevel.checkpoint()
    during = count_tasks()
    timer.cancel()
    await anyio.sleep(0.01)
    assert count_tasks() == before  # cancelled: the task ended with it
    call_at(anyio.current_time() + 0.01, lambda: ran.append("ran"))
    await anyio.sleep(0.05)
    assert ran == ["ran"]
    assert count_tasks() == before  # ran: the task ended after it
    if sniffio.current_async_library() == "trio":
        assert during == before + 1  # one system task, for every timer of the run
    else:
        assert during == before  # asyncio's loop keeps timers without a task


def test_anyio_works_in_a_callback_on_a_loop_that_anyio_did_not_start() -> None:
    # A server such as hypercorn runs the asyncio loop itself; a loop callback runs in no
    # task, where sniffio cannot tell the library unless call_at tells it.
    import asyncio

    async def main() -> float:
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[float] = loop.create_future()
        call_at(loop.time() + 0.01, lambda: seen.set_result(anyio.current_time()))
        return await seen

    assert asyncio.run(main()) > 0
