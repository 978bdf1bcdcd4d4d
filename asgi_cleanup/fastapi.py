"""FastAPI: the request's cleanup registry as a dependency.

.. code-block:: python

    from asgi_cleanup.fastapi import CleanupRegistryDep


    @app.get("/")
    async def home(cleanup: CleanupRegistryDep) -> dict[str, str]:
        cleanup.register(release, "home")
        return {"hello": "world"}
"""

from typing import Annotated

from fastapi import Depends
from fastapi.requests import HTTPConnection

from .registry import CleanupRegistry, registry_in

__all__ = ["CleanupRegistryDep", "cleanup_registry", "get_cleanup_registry"]

_INSTALL = (
    "Wrap the whole app: app = CleanupMiddleware(FastAPI(...)) (recommended), or add it: "
    "app.add_middleware(CleanupMiddleware)."
)


def cleanup_registry(connection: HTTPConnection) -> CleanupRegistry:
    """The cleanup registry of ``connection``'s request, for a direct call.

    :param connection: a FastAPI ``Request`` or ``WebSocket``.
    :raises RuntimeError: if no ``CleanupMiddleware`` is around the app; the message says how
        to install it.
    """
    return registry_in(connection.scope, _INSTALL)


async def get_cleanup_registry(connection: HTTPConnection) -> CleanupRegistry:
    """The dependency behind :data:`CleanupRegistryDep`: ``Depends(get_cleanup_registry)``.

    Async, so that FastAPI calls it on the event loop instead of sending it to its thread pool
    as it does a sync dependency. Works for HTTP and websocket endpoints.

    :raises RuntimeError: as :func:`cleanup_registry`.
    """
    return registry_in(connection.scope, _INSTALL)


CleanupRegistryDep = Annotated[CleanupRegistry, Depends(get_cleanup_registry)]
"""A parameter of this type receives the request's :class:`~asgi_cleanup.CleanupRegistry`."""
