"""Quart: the cleanup registry of the current request or websocket.

.. code-block:: python

    from asgi_cleanup.quart import cleanup_registry


    @app.get("/")
    async def home() -> str:
        cleanup_registry().register(release, "home")
        return "hello"
"""

from quart import Request, Websocket, has_request_context, has_websocket_context
from quart import request as current_request
from quart import websocket as current_websocket

from .registry import CleanupRegistry, registry_in

__all__ = ["cleanup_registry"]

_INSTALL = "Wrap Quart's ASGI app: app.asgi_app = CleanupMiddleware(app.asgi_app)."


def cleanup_registry(connection: Request | Websocket | None = None) -> CleanupRegistry:
    """The cleanup registry of ``connection``'s request (``connection.scope["cleanup"]``, which
    Quart's typed scope does not declare).

    :param connection: a Quart ``Request`` or ``Websocket``; by default the current ``request``
        or, in a websocket handler, the current ``websocket``.
    :raises RuntimeError: if no ``CleanupMiddleware`` is around the app (the message says how to
        install it), or, without ``connection``, outside a request and a websocket context.
    """
    if connection is None:
        if has_request_context():
            connection = current_request
        elif has_websocket_context():
            connection = current_websocket
        else:
            raise RuntimeError(
                "cleanup_registry() needs a request or websocket context; outside one, "
                "pass the request: cleanup_registry(request)"
            )
    return registry_in(connection.scope, _INSTALL)
