"""plait.otel under real hypercorn, both workers, with a websockets client (issue 13,
point 3): the span and the counters match what the client did."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from websockets.sync.client import connect

import plait
from plait.otel import Telemetry
from plait.testing import run_hypercorn

pytestmark = pytest.mark.integration


@plait.listener("/rooms/{room}")
async def room(data: str, room: str) -> str:
    return f"{room}:{data}"


def metric(reader: InMemoryMetricReader, name: str) -> int:
    data = reader.get_metrics_data()
    return sum(
        getattr(point, "value", None) or getattr(point, "count", 0)
        for resource in (data.resource_metrics if data is not None else ())
        for scope in resource.scope_metrics
        for found in scope.metrics
        if found.name == name
        for point in found.data.data_points
    )


@pytest.fixture(params=["asyncio", "trio"])
def served(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[str, InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
    )
    app = plait.App(routes=[room], telemetry=telemetry)
    with run_hypercorn(app, worker_class=request.param) as server:
        yield server.url("/rooms/lobby"), spans, reader


def test_a_connection_under_hypercorn_is_one_span_and_counted(
    served: tuple[str, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    url, spans, reader = served
    with connect(url, open_timeout=5, close_timeout=5) as ws:
        for text in ("a", "bc", "déf"):
            ws.send(text)
            assert ws.recv(timeout=5) == f"lobby:{text}"
        assert metric(reader, "plait.websocket.connections.open") == 1
    deadline = time.monotonic() + 5
    while not spans.get_finished_spans() and time.monotonic() < deadline:
        time.sleep(0.01)  # the server ends the connection once the close has arrived
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "WebSocket /rooms/{room}"
    assert attributes["plait.path_param.room"] == "lobby"
    # The client closed with 1000, but hypercorn reports every client close to the app
    # as 1006 (hypercorn/protocol/ws_stream.py: StreamClosed while CONNECTED).
    assert attributes["websocket.close.code"] == 1006
    assert attributes["plait.closed_by"] == "client"
    assert attributes["client.address"] == "127.0.0.1"
    assert (attributes["plait.messages.received"], attributes["plait.messages.sent"]) == (3, 3)
    sizes = len(b"a") + len(b"bc") + len("déf".encode())
    assert attributes["plait.bytes.received"] == sizes
    assert attributes["plait.bytes.sent"] == sizes + 3 * len(b"lobby:")
    assert metric(reader, "plait.websocket.connections.open") == 0
    assert metric(reader, "plait.websocket.connections.opened") == 1
    assert metric(reader, "plait.websocket.connections.closed") == 1
    assert metric(reader, "plait.websocket.messages.received") == 3
    assert metric(reader, "plait.websocket.bytes.sent") == sizes + 3 * len(b"lobby:")
    assert metric(reader, "plait.websocket.cancel.latency") == 1
