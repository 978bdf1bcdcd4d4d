"""Helpers for testing apps that use ``CleanupMiddleware``: wait for their cleanups, see what
each request's cleanups did, and the failures they logged. The pytest plugin
(:mod:`asgi_cleanup.testing.pytest_plugin`) offers them as the ``asgi_cleanups`` fixture.
Nothing here imports pytest."""

from ._apps import drain, drain_client, find_middlewares
from ._recorder import CleanupFailure, CleanupRecorder, RequestCleanups, cleanup_name

__all__ = [
    "CleanupFailure",
    "CleanupRecorder",
    "RequestCleanups",
    "cleanup_name",
    "drain",
    "drain_client",
    "find_middlewares",
]
