"""Observability with OpenTelemetry: a span for each connection, and metrics.

::

    import plait
    import plait.otel

    app = plait.App(routes=[...], telemetry=plait.otel.Telemetry())

Needs the ``otel`` extra (``pip install "plait[otel]"``: the OpenTelemetry API only);
the SDK and an exporter are the deployment's choice, configured as for any other
instrumented library. Without a :class:`Telemetry` nothing here is imported and the
engine does no work for it. See the deployment guide's section on observability.
"""

from ._otel import Telemetry

Telemetry.__module__ = __name__

__all__ = ("Telemetry",)
