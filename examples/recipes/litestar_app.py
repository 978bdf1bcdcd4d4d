"""The Litestar recipe: CleanupMiddleware around the whole app; a dependency opens a session
and registers its closing on the registry that ``provide_cleanup_registry`` provides.

    uvicorn litestar_app:app --app-dir examples/recipes
    curl -i http://127.0.0.1:8000/        # 200, then the cleanups log how it ended
    curl -i http://127.0.0.1:8000/error   # the handler raises: Litestar answers 500

docs/recipes/litestar.md walks through it.
"""

import logging
from pathlib import Path
from typing import Any

from litestar import Litestar, WebSocket, get, websocket
from litestar.di import NamedDependency, Provide

from asgi_cleanup import CleanupMiddleware, CleanupRegistry
from asgi_cleanup.litestar import provide_cleanup_registry

SETTINGS = Path(__file__).with_name("cleanup.toml")

log = logging.getLogger(__name__)


class Session:
    """Stands in for a database session."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def close(self, cleanup: CleanupRegistry) -> None:
        # The registry knows how the request ended once cleanups start.
        outcome = cleanup.outcome
        assert outcome is not None
        log.info(
            "dynamic cleanup: closed session %r; status %s, exception %r",
            self.name,
            outcome.status,
            outcome.exception,
            extra={"outcome": outcome},
        )


async def provide_session(cleanup: NamedDependency[CleanupRegistry]) -> Session:
    # Closed after the response has gone out, however the request ended.
    session = Session("litestar")
    cleanup.register(session.close, cleanup)
    return session


@get("/")
async def home(session: NamedDependency[Session]) -> str:
    return f"hello from {session.name}\n"


@get("/error")
async def error(session: NamedDependency[Session]) -> str:
    raise RuntimeError("the handler failed")


@websocket("/ws")
async def echo(socket: WebSocket[Any, Any, Any], session: NamedDependency[Session]) -> None:
    await socket.accept()
    await socket.send_text(await socket.receive_text())
    await socket.close()


dependencies = {
    "cleanup": Provide(provide_cleanup_registry),
    "session": Provide(provide_session),
}
route_handlers = [home, error, echo]

# Outermost: the middleware sees every request, 404s included, and the lifespan shutdown
# waits for running cleanups. Litestar(..., middleware=[DefineMiddleware(CleanupMiddleware,
# settings=SETTINGS)]) wraps each route instead (docs/recipes/litestar.md: the difference).
app = CleanupMiddleware(
    Litestar(route_handlers=route_handlers, dependencies=dependencies), settings=SETTINGS
)
