"""Observability with OpenTelemetry, in-process (issue 13, point 3).

Spans and metrics go to the SDK's in-memory exporter and reader on private providers,
never the global ones. Every async test runs on asyncio and trio.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import plait
import plait.otel
from _support import closed
from plait import App, RateLimit, WebSocket
from plait.otel import Telemetry
from plait.testing import AsyncTestClient


@dataclass
class Collected:
    """A Telemetry on private providers, and what it recorded."""

    telemetry: Telemetry
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """``(attributes, value)`` of each point of the metric ``name``; a histogram's
        value is its count."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            value = getattr(point, "value", None)
                            if value is None:
                                value = (point.count, point.sum)  # a histogram
                            found.append((dict(point.attributes or {}), value))
        return found

    def total(self, name: str, **attributes: Any) -> Any:
        """The sum of the points whose attributes match (``a__b_c=`` matches ``a.b_c``)."""
        return sum(
            value
            for found, value in self.points(name)
            if all(found.get(k.replace("__", ".")) == v for k, v in attributes.items())
        )


def collected(*, listener_spans: bool = False) -> Collected:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry = Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        listener_spans=listener_spans,
    )
    return Collected(telemetry, spans, reader)


@pytest.fixture
def otel() -> Collected:
    return collected()


@plait.websocket("/chat/{room}/{n:int}")
async def chat(ws: WebSocket) -> None:
    await ws.accept()
    async for text in ws.iter_text():
        await ws.send_text(text.upper())


@plait.websocket("/fails")
async def fails(ws: WebSocket) -> None:
    await ws.accept()
    await ws.receive_text()
    raise RuntimeError("secret detail")


@plait.listener("/shout")
async def shout(data: str) -> str:
    if data == "boom":
        raise ValueError("boom")
    return data.upper()


# -- the connection's span --------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_connection_is_one_span_with_route_params_close_and_counts(
    otel: Collected,
) -> None:
    async with AsyncTestClient(App(routes=[chat], telemetry=otel.telemetry)) as client:
        async with client.websocket_connect("/chat/lobby/7") as ws:
            await ws.send_text("héllo")
            assert await ws.receive_text() == "HÉLLO"
            await ws.send_bytes(b"xyz")  # iter_text refuses bytes: the handler fails
            await closed(ws)
        async with client.websocket_connect("/chat/lobby/8") as ws:
            await ws.send_text("hi")
            assert await ws.receive_text() == "HI"
            await ws.close(1000)
    first, second = otel.finished()
    assert second.name == "WebSocket /chat/{room}/{n:int}"
    assert second.kind is SpanKind.SERVER
    attributes = dict(second.attributes or {})
    assert attributes["plait.route"] == "/chat/{room}/{n:int}"
    assert attributes["url.path"] == "/chat/lobby/8"
    assert attributes["network.protocol.name"] == "websocket"
    assert attributes["plait.path_param.room"] == "lobby"
    assert attributes["plait.path_param.n"] == 8
    assert attributes["websocket.close.code"] == 1000
    assert attributes["plait.closed_by"] == "client"
    assert attributes["plait.messages.received"] == 1
    assert attributes["plait.messages.sent"] == 1
    assert attributes["plait.bytes.received"] == attributes["plait.bytes.sent"] == 2
    assert second.status.status_code is StatusCode.UNSET
    # The first connection's span is its own: counted in bytes of UTF-8.
    first_attributes = dict(first.attributes or {})
    assert first_attributes["plait.path_param.n"] == 7
    assert first_attributes["plait.bytes.received"] == len("héllo".encode()) + 3
    assert first_attributes["plait.messages.received"] == 2
    assert first.parent is None  # no span leaks into the next connection
    assert second.parent is None


@pytest.mark.anyio
async def test_a_failing_handler_gives_1011_and_an_error_status(otel: Collected) -> None:
    async with (
        AsyncTestClient(App(routes=[fails], telemetry=otel.telemetry)) as client,
        client.websocket_connect("/fails") as ws,
    ):
        await ws.send_text("go")
        assert (await closed(ws)).code == 1011
    (span,) = otel.finished()
    attributes = dict(span.attributes or {})
    assert attributes["websocket.close.code"] == 1011
    assert attributes["plait.closed_by"] == "server"
    assert span.status.status_code is StatusCode.ERROR
    (event,) = span.events
    assert event.name == "exception"
    assert dict(event.attributes or {})["exception.type"] == "RuntimeError"
    assert otel.total("plait.websocket.connections.closed", websocket__close__code=1011) == 1


@pytest.mark.anyio
async def test_the_span_ends_when_the_engine_closes_and_when_the_server_cancels(
    otel: Collected,
) -> None:
    @plait.websocket("/sleeps")
    async def sleeps(ws: WebSocket) -> None:
        await ws.accept()
        await anyio.sleep_forever()

    app = App(routes=[sleeps], telemetry=otel.telemetry, max_message_size=4)
    async with AsyncTestClient(app) as client:
        async with client.websocket_connect("/sleeps") as ws:
            await ws.send_text("too long")
            assert (await closed(ws)).code == 1009
        async with client.websocket_connect("/sleeps") as ws:
            await app.close_connections()
            assert (await closed(ws)).code == 1001
    too_big, shut_down = (dict(span.attributes or {}) for span in otel.finished())
    assert (too_big["websocket.close.code"], too_big["plait.closed_by"]) == (1009, "engine")
    assert (shut_down["websocket.close.code"], shut_down["plait.closed_by"]) == (1001, "engine")
    assert otel.total("plait.websocket.connections.open") == 0


@pytest.mark.anyio
async def test_listener_spans_when_asked_for() -> None:
    otel = collected(listener_spans=True)
    async with (
        AsyncTestClient(App(routes=[shout], telemetry=otel.telemetry)) as client,
        client.websocket_connect("/shout") as ws,
    ):
        await ws.send_text("a")
        assert await ws.receive_text() == "A"
        await ws.send_text("boom")
        assert (await closed(ws)).code == 1011
    *calls, connection = otel.finished()
    assert [span.name for span in calls] == ["plait.listener /shout"] * 2
    assert all(span.parent is not None for span in calls)
    assert {span.parent.span_id for span in calls if span.parent} == {connection.context.span_id}
    assert calls[0].status.status_code is StatusCode.UNSET
    assert calls[1].status.status_code is StatusCode.ERROR


@pytest.mark.anyio
async def test_no_listener_spans_by_default(otel: Collected) -> None:
    async with (
        AsyncTestClient(App(routes=[shout], telemetry=otel.telemetry)) as client,
        client.websocket_connect("/shout") as ws,
    ):
        await ws.send_text("a")
        assert await ws.receive_text() == "A"
    assert [span.name for span in otel.finished()] == ["WebSocket /shout"]


@pytest.mark.anyio
async def test_serve_connection_takes_telemetry_too(otel: Collected) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(await ws.receive_text())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await plait.serve_connection(scope, receive, send, handler, telemetry=otel.telemetry)

    async with AsyncTestClient(app) as client, client.websocket_connect("/raw") as ws:
        await ws.send_text("x")
        assert await ws.receive_text() == "x"
        await closed(ws)
    (span,) = otel.finished()
    assert span.name == "WebSocket"
    assert dict(span.attributes or {})["websocket.close.code"] == 1000
    assert dict(span.attributes or {})["plait.closed_by"] == "server"


# -- metrics ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_connection_message_and_byte_counters(otel: Collected) -> None:
    async with AsyncTestClient(App(routes=[chat], telemetry=otel.telemetry)) as client:
        for room in ("a", "b", "c"):
            async with client.websocket_connect(f"/chat/{room}/1") as ws:
                assert otel.total("plait.websocket.connections.open") == 1
                for text in ("one", "two"):
                    await ws.send_text(text)
                    await ws.receive_text()
                await ws.close(1000 if room != "c" else 4000)
    route = "/chat/{room}/{n:int}"
    assert otel.total("plait.websocket.connections.open") == 0
    assert otel.total("plait.websocket.connections.opened", plait__route=route) == 3
    assert otel.total("plait.websocket.connections.closed", websocket__close__code=1000) == 2
    assert otel.total("plait.websocket.connections.closed", websocket__close__code=4000) == 1
    assert otel.total("plait.websocket.messages.received") == 6
    assert otel.total("plait.websocket.messages.sent") == 6
    assert otel.total("plait.websocket.bytes.received") == 3 * 6
    assert otel.total("plait.websocket.bytes.sent") == 3 * 6
    # One latency figure per connection the client closed, all well under a second.
    ((_, (count, total)),) = otel.points("plait.websocket.cancel.latency")
    assert count == 3
    assert 0 <= total < 3


@pytest.mark.anyio
async def test_no_cancel_latency_when_the_server_closes(otel: Collected) -> None:
    async with (
        AsyncTestClient(App(routes=[fails], telemetry=otel.telemetry)) as client,
        client.websocket_connect("/fails") as ws,
    ):
        await ws.send_text("go")
        await closed(ws)
    assert otel.points("plait.websocket.cancel.latency") == []


@pytest.mark.anyio
async def test_rate_limit_decisions(otel: Collected) -> None:
    @plait.listener("/drop", rate_limit=RateLimit(messages=1, per=60, burst=2, on_exceed="drop"))
    async def drop(data: str) -> None:
        pass

    @plait.listener("/close", rate_limit=RateLimit(messages=1, per=60, burst=1))
    async def close(data: str) -> None:
        pass

    async with AsyncTestClient(App(routes=[drop, close], telemetry=otel.telemetry)) as client:
        async with client.websocket_connect("/drop") as ws:
            for i in range(7):
                await ws.send_text(str(i))
        async with client.websocket_connect("/close") as ws:
            for i in range(3):
                await ws.send_text(str(i))
            assert (await closed(ws)).code == 1008
    name = "plait.websocket.rate_limit.decisions"
    assert otel.total(name, plait__route="/drop", plait__rate_limit__decision="dropped") == 5
    assert otel.total(name, plait__route="/close", plait__rate_limit__decision="closed") == 1
    spans = {span.name: dict(span.attributes or {}) for span in otel.finished()}
    assert spans["WebSocket /drop"]["plait.messages.limited"] == 5
    assert spans["WebSocket /close"]["plait.closed_by"] == "engine"


@pytest.mark.anyio
async def test_hub_drops_by_policy(otel: Collected) -> None:
    hub = plait.Hub()
    app = App(routes=[], hub=hub, telemetry=otel.telemetry)
    async with AsyncTestClient(app):
        async with (
            hub.subscribe("news", buffer=2, policy="drop_oldest") as oldest,
            hub.subscribe("news", buffer=3, policy="drop_newest"),
        ):
            for i in range(10):
                await hub.publish("news", i)
            await anyio.sleep(0.05)  # delivered
            assert oldest.statistics()["dropped"] == 8
        name = "plait.websocket.hub.messages.dropped"
        assert otel.total(name, plait__hub__policy="drop_oldest") == 8
        assert otel.total(name, plait__hub__policy="drop_newest") == 7
        assert otel.total(name, plait__hub__policy="disconnect") == 0


# -- when it is off, and when the extra is missing -----------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_telemetry_opentelemetry_is_never_imported() -> None:
    result = run_python(
        """
        import sys
        import plait, plait.otel
        from plait.testing import TestClient

        @plait.listener("/echo")
        async def echo(data: str) -> str:
            return data

        with TestClient(plait.App(routes=[echo])) as client:
            with client.websocket_connect("/echo") as ws:
                ws.send_text("hi")
                assert ws.receive_text() == "hi"
        loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
        print(loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_missing_extra_names_it() -> None:
    result = run_python(
        """
        import sys
        sys.modules["opentelemetry"] = None
        import plait.otel
        try:
            plait.otel.Telemetry()
        except ImportError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "plait[otel]"' in result.stdout
    assert "plait.otel.Telemetry" in result.stdout


# -- the example --------------------------------------------------------------------------------


def test_the_example_prints_spans_and_metrics_on_the_console() -> None:
    result = run_python(
        """
        from plait.testing import TestClient
        from examples.observed import app

        with TestClient(app) as client:
            with client.websocket_connect("/rooms/lobby") as ws:
                ws.send_text("hi")
                assert ws.receive_text() == "lobby: hi"
        """
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert '"name": "plait.listener /rooms/{room}"' in output
    assert '"name": "WebSocket /rooms/{room}"' in output
    assert '"plait.path_param.room": "lobby"' in output
    assert '"plait.closed_by": "client"' in output
    # The metrics, printed when the provider shuts down at exit.
    assert '"name": "plait.websocket.connections.opened"' in output
