"""coredis's own error log for a connection attempt that plait cancels (the hub stopping
while it reconnects to a Redis that was down) is no error: it is lowered to DEBUG."""

from __future__ import annotations

import asyncio
import logging

import pytest
import trio

import plait.channels._redis  # noqa: F401 - installs the filter on the coredis logger


@pytest.mark.parametrize(
    ("exc", "level"),
    [
        (asyncio.CancelledError(), logging.DEBUG),
        (trio.Cancelled._create(), logging.DEBUG),  # type: ignore[attr-defined]
        (ConnectionRefusedError(111, "Connection refused"), logging.ERROR),
    ],
    ids=["asyncio-cancelled", "trio-cancelled", "refused"],
)
def test_only_a_cancelled_connection_attempt_is_lowered_to_debug(
    exc: BaseException, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="coredis")
    try:
        raise exc
    except BaseException:
        logging.getLogger("coredis").exception("Connection attempt failed unexpectedly!")
    [record] = caplog.records
    assert (record.levelno, record.levelname) == (level, logging.getLevelName(level))
