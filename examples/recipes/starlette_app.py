"""The Starlette recipe: CleanupMiddleware around the whole app, cleanups registered in the
endpoints through ``asgi_cleanup.starlette.cleanup_registry``.

    uvicorn starlette_app:app --app-dir examples/recipes
    curl -i http://127.0.0.1:8000/        # 200, then the cleanups log how it ended
    curl -i http://127.0.0.1:8000/error   # the endpoint raises: Starlette answers 500

docs/recipes/starlette.md walks through it.
"""

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_cleanup import CleanupMiddleware, CleanupRegistry
from asgi_cleanup.starlette import cleanup_registry

SETTINGS = Path(__file__).with_name("cleanup.toml")

log = logging.getLogger(__name__)


async def close_session(name: str, cleanup: CleanupRegistry) -> None:
    # The registry knows how the request ended once cleanups start.
    outcome = cleanup.outcome
    assert outcome is not None
    log.info(
        "dynamic cleanup: closed session %r; status %s, exception %r",
        name,
        outcome.status,
        outcome.exception,
        extra={"outcome": outcome},
    )


async def home(request: Request) -> PlainTextResponse:
    cleanup = cleanup_registry(request)
    cleanup.register(close_session, "starlette home", cleanup)
    return PlainTextResponse("hello\n")


async def error(request: Request) -> PlainTextResponse:
    cleanup = cleanup_registry(request)
    cleanup.register(close_session, "starlette error", cleanup)
    raise RuntimeError("the endpoint failed")


async def echo(websocket: WebSocket) -> None:
    cleanup = cleanup_registry(websocket)
    cleanup.register(close_session, "starlette websocket", cleanup)
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


routes = [Route("/", home), Route("/error", error), WebSocketRoute("/ws", echo)]

# Outermost: the middleware sees every request, Starlette's own 500 responses included, and
# a bad settings file stops the import. Starlette(routes=routes, middleware=[Middleware(
# CleanupMiddleware, settings=SETTINGS)]) works too (docs/recipes/starlette.md: the difference).
app = CleanupMiddleware(Starlette(routes=routes), settings=SETTINGS)
