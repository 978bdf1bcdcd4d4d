"""Cleanup durations for Prometheus: the OpenTelemetry Prometheus exporter serves the
middleware's histograms from prometheus_client's registry."""

from observed_app import inner_app
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider

from asgi_cleanup import CleanupMiddleware

meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
app = CleanupMiddleware(inner_app, telemetry=True, meter_provider=meter_provider)
# prometheus_client.start_http_server(9464) serves them; or mount prometheus_client.make_asgi_app()
