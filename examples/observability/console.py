"""A five-line start: OpenTelemetry's SDK printing each cleanup's span to the console."""

from observed_app import inner_app
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from asgi_cleanup import CleanupMiddleware

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
trace.set_tracer_provider(provider)

app = CleanupMiddleware(inner_app, telemetry=True)
