"""What the engine calls for telemetry, as protocols: ``Telemetry``, made once by the
middleware when ``telemetry=True``, and a ``PhaseWatch`` per phase. ``asgi_cleanup.otel``
implements them with OpenTelemetry; the engine imports nothing of it."""

from typing import Any, Protocol

from .registry import Entry


class PhaseWatch(Protocol):
    """Telemetry of one request's cleanup phase, made with it."""

    def start(self, entry: Entry, began: float) -> None:
        """The cleanup of ``entry`` is about to be called, in the thread that calls it; its
        timeout counts from ``began`` (``time.monotonic()``)."""

    def end(self, entry: Entry, result: Any, seconds: float | None = None) -> None:
        """It ended with ``result`` (``None``, an exception or a ``TimedOut``), ``seconds``
        after it began (``None``: now)."""

    def given_up(self, entry: Entry, began: float) -> None:
        """The phase stopped waiting for it at its timeout (it began at ``began``, or never
        started): it is left behind."""

    def current(self, entry: Entry, call: Any) -> None:
        """``call()`` while the cleanup's span is current (its failure's log record)."""

    def finished(self) -> None:
        """The phase has ended."""


class Telemetry(Protocol):
    """A middleware's telemetry, made at construction."""

    def phase(self) -> PhaseWatch:
        """A new phase, made when the app call has ended."""

    def shutdown_unfinished(self, phases: int) -> None:
        """``phases`` were still running or pending when ``shutdown_timeout`` ended."""
