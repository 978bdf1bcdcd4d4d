"""Litestar: the request's cleanup registry from a connection, or as a dependency.

.. code-block:: python

    from litestar.di import NamedDependency, Provide
    from asgi_cleanup.litestar import provide_cleanup_registry


    @get("/")
    async def home(cleanup: NamedDependency[CleanupRegistry]) -> str: ...


    app = Litestar([home], dependencies={"cleanup": Provide(provide_cleanup_registry)})
"""

from typing import Any

from litestar.connection import ASGIConnection
from litestar.types import Scope

from .registry import CleanupRegistry, registry_in

__all__ = ["cleanup_registry", "provide_cleanup_registry"]

_INSTALL = (
    "Wrap the whole app: app = CleanupMiddleware(Litestar(...)) (recommended), or list it: "
    "Litestar(..., middleware=[DefineMiddleware(CleanupMiddleware)])."
)


def cleanup_registry(connection: ASGIConnection[Any, Any, Any, Any]) -> CleanupRegistry:
    """The cleanup registry of ``connection``'s request (``connection.scope["cleanup"]``, which
    Litestar's typed scope does not declare).

    :param connection: a Litestar ``Request`` or ``WebSocket``.
    :raises RuntimeError: if no ``CleanupMiddleware`` is around the route; the message says how
        to install it.
    """
    return registry_in(connection.scope, _INSTALL)


async def provide_cleanup_registry(scope: Scope) -> CleanupRegistry:
    """A dependency provider: ``dependencies={"cleanup": Provide(provide_cleanup_registry)}``.

    It takes Litestar's reserved ``scope`` argument, so it serves HTTP and websocket handlers
    alike; async, so Litestar calls it on the event loop, not in a thread.

    :raises RuntimeError: as :func:`cleanup_registry`.
    """
    return registry_in(scope, _INSTALL)
