"""Django: the request's cleanup registry from an ``HttpRequest`` served over ASGI.

Django itself is not imported: the request's ASGI scope is its ``scope`` attribute (on
``ASGIRequest``). ``register`` is thread-safe, so sync views, which Django runs in a worker
thread, call it as async views do.
"""

from collections.abc import Mapping

from ._access import registry_in
from .registry import CleanupRegistry

__all__ = ["cleanup_registry"]

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
