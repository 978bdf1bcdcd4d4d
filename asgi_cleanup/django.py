"""Django: the request's cleanup registry from an ``HttpRequest`` served over ASGI, and
Django's database connection rules for the middleware's worker threads.

Django itself is imported only when ``closing_old_connections`` runs: the request's ASGI scope
is its ``scope`` attribute (on ``ASGIRequest``). ``register`` is thread-safe, so sync views,
which Django runs in a worker thread, call it as async views do.
"""

import contextlib
import importlib
from collections.abc import Iterator, Mapping

from .registry import CleanupRegistry, registry_in

__all__ = ["cleanup_registry", "closing_old_connections"]

_INSTALL = (
    "Wrap Django's handler in asgi.py: "
    "application = CleanupMiddleware(get_asgi_application()), and serve that."
)


def cleanup_registry(request: object) -> CleanupRegistry:
    """The cleanup registry of ``request``, a Django ``HttpRequest`` (``request.scope["cleanup"]``).

    :raises RuntimeError: if no ``CleanupMiddleware`` is around Django's ASGI handler, or if the
        request came over WSGI (``runserver`` without an ASGI server, ``django.test.Client``),
        which has no ASGI scope; the message says what to do.
    """
    scope = getattr(request, "scope", None)
    if not isinstance(scope, Mapping):
        raise RuntimeError(
            f"No cleanup registry for this request: {type(request).__name__} has no ASGI scope, "
            "so it was not served over ASGI (a WSGI server, or django.test.Client). Serve the "
            f"project's asgi.py with an ASGI server. {_INSTALL}"
        )
    return registry_in(scope, _INSTALL)


@contextlib.contextmanager
def closing_old_connections() -> Iterator[None]:
    """Treat a run of sync cleanups as Django treats a request: ``close_old_connections()``
    before and after it, in its worker thread.

    Pass it as ``CleanupMiddleware(get_asgi_application(), sync_run_context=
    closing_old_connections)``. Django keeps a connection per thread and closes it only
    around a request (``request_started`` / ``request_finished``), in the thread that served
    it; a sync cleanup runs in one of the middleware's threads instead. So, there, a
    connection older than ``CONN_MAX_AGE`` (``0``, the default: every one) is closed after the
    run, as is one left with autocommit off (an open transaction) or made unusable by an
    error; with ``CONN_MAX_AGE > 0`` the thread keeps a healthy one for its next run.
    """
    close = importlib.import_module("django.db").close_old_connections  # Django has no types
    close()
    try:
        yield
    finally:
        close()
