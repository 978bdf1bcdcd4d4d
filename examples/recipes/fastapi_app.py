"""The FastAPI recipe: CleanupMiddleware around the whole app; a dependency opens a session
and registers its closing through ``asgi_cleanup.fastapi.CleanupRegistryDep``.

    uvicorn fastapi_app:app --app-dir examples/recipes
    curl -i http://127.0.0.1:8000/        # 200, then the cleanups log how it ended
    curl -i http://127.0.0.1:8000/error   # the endpoint raises: FastAPI answers 500

docs/recipes/fastapi.md walks through it.
"""

import logging
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, WebSocket

from asgi_cleanup import CleanupMiddleware, CleanupRegistry
from asgi_cleanup.fastapi import CleanupRegistryDep

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


async def get_session(cleanup: CleanupRegistryDep) -> Session:
    # Closed after the whole app call, however the request ended, within the settings'
    # timeout and shielded from cancellation; a failure only reaches the log. (Code after
    # `yield` in a dependency runs inside the endpoint's call, with none of that.)
    session = Session("fastapi")
    cleanup.register(session.close, cleanup)
    return session


SessionDep = Annotated[Session, Depends(get_session)]

api = FastAPI()


@api.get("/")
async def home(session: SessionDep) -> dict[str, str]:
    return {"hello": session.name}


@api.get("/error")
async def error(session: SessionDep) -> dict[str, str]:
    raise RuntimeError("the endpoint failed")


@api.websocket("/ws")
async def echo(websocket: WebSocket, session: SessionDep) -> None:
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


# Outermost: the middleware sees every request, FastAPI's own 500 responses included, and a
# bad settings file stops the import. api.add_middleware(CleanupMiddleware, settings=SETTINGS)
# works too (docs/recipes/fastapi.md: the difference).
app = CleanupMiddleware(api, settings=SETTINGS)
