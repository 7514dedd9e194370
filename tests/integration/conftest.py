"""Fixtures shared by the tests that run real hypercorn in this process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from _records import RECORDS, Record


@pytest.fixture
def rec(request: pytest.FixtureRequest) -> Iterator[tuple[str, Record]]:
    """This test's record, and the key its client passes as the ``id`` query parameter."""
    key = request.node.nodeid
    RECORDS[key] = Record()
    yield key, RECORDS[key]
    del RECORDS[key]
