"""benchmarks.heartbeat measures something: each app on each backend pings and is answered."""

from __future__ import annotations

import pytest
from benchmarks.heartbeat import APPS, BACKENDS, run_case


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("app", APPS)
def test_every_case_pings_each_connection_about_once_a_second(backend: str, app: str) -> None:
    result = run_case(backend, app, conns=10, seconds=1.0)
    assert 8 <= result["pings"] <= 25  # 10 connections, one ping a second each
    assert result["cpu_us_per_ping"] > 0
