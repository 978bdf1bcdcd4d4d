"""The Quart recipe: CleanupMiddleware around Quart's ``asgi_app``; a ``before_request``
hook opens a session and registers its closing through ``asgi_cleanup.quart.cleanup_registry``.

    hypercorn quart_app:app      (from examples/recipes)
    curl -i http://127.0.0.1:8000/        # 200, then the cleanups log how it ended
    curl -i http://127.0.0.1:8000/error   # the view raises: Quart answers 500

docs/recipes/quart.md walks through it.
"""

import logging
from pathlib import Path

from quart import Quart, g, websocket

from asgi_cleanup import CleanupMiddleware, CleanupRegistry
from asgi_cleanup.quart import cleanup_registry

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


app = Quart(__name__)


@app.before_request
@app.before_websocket
async def open_session() -> None:
    # Closed after the response has gone out, however the request ended. (Quart runs
    # teardown_request functions when the request context ends, before the response is sent.)
    cleanup = cleanup_registry()  # of the current request or websocket
    g.session = Session("quart")
    cleanup.register(g.session.close, cleanup)


@app.get("/")
async def home() -> str:
    return f"hello from {g.session.name}\n"


@app.get("/error")
async def error() -> str:
    raise RuntimeError("the view failed")


@app.websocket("/ws")
async def echo() -> None:
    await websocket.accept()
    await websocket.send(await websocket.receive())
    await websocket.close(1000)


# Quart's way to add ASGI middleware: `app` stays a Quart app (for `quart run` and
# app.test_client()), and the middleware still sees every request and the lifespan.
app.asgi_app = CleanupMiddleware(app.asgi_app, settings=SETTINGS)  # type: ignore[method-assign]
