"""What the cleanups did while a recorder was open: each request's reports, and each failure
logged on the ``asgi_cleanup`` logger."""

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..middleware import CleanupMiddleware
from ..outcome import CleanupReport, CompleteHook, Outcome
from ._apps import Client, drain, drain_client, find_middlewares

App = TypeVar("App")
_FORMATTER = logging.Formatter("%(levelname)s %(name)s: %(message)s")


def cleanup_name(cleanup: Callable[..., Any]) -> str:
    """``module.qualname`` of a cleanup, as the log records name it: a context manager's exit
    as ``module.Class.__exit__``, a partial by the function it wraps, an object by its class."""
    while isinstance(cleanup, functools.partial):
        cleanup = cleanup.func
    name = getattr(cleanup, "cleanup_name", None)  # a context manager's exit
    if isinstance(name, str):
        return name
    qualname = getattr(cleanup, "__qualname__", None)
    if not isinstance(qualname, str):
        return f"{type(cleanup).__module__}.{type(cleanup).__qualname__}"
    return f"{getattr(cleanup, '__module__', None) or '?'}.{qualname}"


@dataclass(frozen=True)
class RequestCleanups:
    """The cleanups one request ran, from a watched middleware's ``on_complete``."""

    outcome: Outcome
    """How the request ended."""

    reports: tuple[CleanupReport, ...]
    """A report per cleanup, in the order they ran."""

    @property
    def names(self) -> list[str]:
        """The cleanups' ``module.qualname``, in the order they ran."""
        return [cleanup_name(report.cleanup) for report in self.reports]

    @property
    def failed(self) -> list[CleanupReport]:
        """The reports of the cleanups that raised or timed out."""
        return [report for report in self.reports if report.exception is not None]


@dataclass(frozen=True)
class CleanupFailure:
    """A record at ERROR or above on the ``asgi_cleanup`` logger: a cleanup that failed or
    timed out, or a hook that failed."""

    record: logging.LogRecord

    @property
    def message(self) -> str:
        """The message: it names the cleanup and the request's method and path."""
        return self.record.getMessage()

    @property
    def exception(self) -> BaseException | None:
        """What the cleanup raised (a ``TimeoutError`` for a timeout), if the record has it."""
        exc_info = self.record.exc_info
        return exc_info[1] if exc_info else None

    def __str__(self) -> str:
        """The record as a log line with its traceback."""
        return _FORMATTER.format(self.record)


class _Collector(logging.Handler):
    def __init__(self, failures: list[CleanupFailure]) -> None:
        super().__init__(logging.ERROR)
        self._failures = failures

    def emit(self, record: logging.LogRecord) -> None:
        self._failures.append(CleanupFailure(record))


class CleanupRecorder:
    """Records, while open, each failure logged on the ``asgi_cleanup`` logger (any
    middleware's) and the reports of each request of the middlewares it :meth:`watch` es.

    Opening adds a handler at ERROR to the ``asgi_cleanup`` logger (its level and propagation
    are left alone: a level above ERROR set there hides failures from it); closing removes it
    and gives watched middlewares back their own ``on_complete``. A context manager; the
    pytest plugin's ``asgi_cleanups`` fixture is one, opened for the test.
    """

    def __init__(self) -> None:
        self.requests: list[RequestCleanups] = []
        """The requests of watched middlewares whose cleanups have all run, in that order."""
        self.failures: list[CleanupFailure] = []
        """The failures logged while open, in order."""
        self._collector = _Collector(self.failures)
        self._watched: dict[int, tuple[CleanupMiddleware, CompleteHook | None]] = {}

    @property
    def reports(self) -> list[CleanupReport]:
        """Every cleanup report of :attr:`requests`, in order."""
        return [report for request in self.requests for report in request.reports]

    def open(self) -> None:
        """Start recording failures; :meth:`watch` records reports."""
        logger = logging.getLogger("asgi_cleanup")
        if self._collector not in logger.handlers:
            logger.addHandler(self._collector)

    def close(self) -> None:
        """Stop recording; watched middlewares get their own ``on_complete`` back."""
        logging.getLogger("asgi_cleanup").removeHandler(self._collector)
        for middleware, hook in self._watched.values():
            middleware.on_complete = hook
        self._watched.clear()

    def __enter__(self) -> "CleanupRecorder":
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def watch(self, app: App) -> App:
        """Record the reports of each request of the ``CleanupMiddleware`` layers in ``app``
        (see :func:`find_middlewares`) until :meth:`close`; their own ``on_complete`` is still
        called, after. Returns ``app``, to pass on to a client.

        :raises LookupError: if ``app`` holds no ``CleanupMiddleware``.
        """
        for middleware in find_middlewares(app):
            if id(middleware) not in self._watched:
                own = middleware.on_complete
                self._watched[id(middleware)] = (middleware, own)
                middleware.on_complete = self._recording(own)
        return app

    def _recording(self, own: CompleteHook | None) -> CompleteHook:
        requests = self.requests

        def on_complete(reports: tuple[CleanupReport, ...], outcome: Outcome) -> Any:
            requests.append(RequestCleanups(outcome, reports))
            return None if own is None else own(reports, outcome)

        if own is not None:  # a failure of the app's own hook is logged under its name
            on_complete.__module__ = getattr(own, "__module__", None) or on_complete.__module__
            on_complete.__qualname__ = getattr(own, "__qualname__", None) or type(own).__qualname__
        return on_complete

    async def drain(self, *apps: Any) -> None:
        """Wait until every cleanup of ``apps`` (default: of the watched middlewares) has
        ended, as :func:`~asgi_cleanup.testing.drain` does."""
        watched = [middleware for middleware, _ in self._watched.values()]
        if not apps and not watched:
            raise LookupError("nothing to drain: watch() an app first, or pass one")
        await drain(*(apps or watched))

    def drain_client(self, client: Client) -> None:
        """Wait until every cleanup of the app of an open Starlette ``TestClient`` has ended,
        as :func:`~asgi_cleanup.testing.drain_client` does."""
        drain_client(client)
