"""Observability: ``hypercorn examples.observed:app``, spans and metrics on the console.

(Or ``hypercorn -k trio examples.observed:app``.) Needs ``pip install "plait[otel]"
opentelemetry-sdk``. Every connection to ``ws://127.0.0.1:8000/rooms/{room}`` prints its
span when it ends, with one child span for each message the listener handled; the
metrics are printed every ten seconds.
"""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import plait
import plait.otel


def console_telemetry(interval: float = 10.0) -> plait.otel.Telemetry:
    """A Telemetry that prints spans as they end and metrics every ``interval`` seconds."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    reader = PeriodicExportingMetricReader(
        ConsoleMetricExporter(), export_interval_millis=interval * 1000
    )
    meter_provider = MeterProvider(metric_readers=[reader])
    # Without the two providers, Telemetry uses the global ones: what an
    # opentelemetry-instrument launcher or your own set_tracer_provider() installs.
    return plait.otel.Telemetry(
        tracer_provider=tracer_provider, meter_provider=meter_provider, listener_spans=True
    )


@plait.listener("/rooms/{room}")
async def room(data: str, room: str) -> str:
    """Answer each message with the room's name."""
    return f"{room}: {data}"


app = plait.App(routes=[room], telemetry=console_telemetry())
