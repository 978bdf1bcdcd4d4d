"""Telemetry of cleanups: OpenTelemetry spans and metrics (``CleanupMiddleware(telemetry=True)``,
docs/observability.md). ``asgi_cleanup.otel.tracing`` imports ``opentelemetry`` and implements
the engine's protocols (``asgi_cleanup._watch``); the middleware imports it only when telemetry
is on."""

from .._watch import PhaseWatch, Telemetry

__all__ = ["PhaseWatch", "Telemetry"]
