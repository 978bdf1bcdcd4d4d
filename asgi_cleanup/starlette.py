"""Starlette: the request's cleanup registry from a ``Request`` or a ``WebSocket``.

FastAPI users: :mod:`asgi_cleanup.fastapi` has the same as a dependency.
"""

from starlette.requests import HTTPConnection

from .registry import CleanupRegistry, registry_in

__all__ = ["cleanup_registry"]

_INSTALL = (
    "Wrap the whole app: app = CleanupMiddleware(Starlette(...)) (recommended), or list it: "
    "Starlette(..., middleware=[Middleware(CleanupMiddleware)])."
)


def cleanup_registry(connection: HTTPConnection) -> CleanupRegistry:
    """The cleanup registry of ``connection``'s request (``connection.scope["cleanup"]``).

    :param connection: a Starlette ``Request`` or ``WebSocket``.
    :raises RuntimeError: if no ``CleanupMiddleware`` is around the app; the message says how
        to install it.
    """
    return registry_in(connection.scope, _INSTALL)
