"""The raw ASGI recipe: any ASGI app, wrapped in CleanupMiddleware.

    uvicorn raw_asgi_app:app --app-dir examples/recipes
    curl -i http://127.0.0.1:8000/        # 200, then the cleanups log how it ended
    curl -i http://127.0.0.1:8000/error   # the app raises: the server answers 500

docs/recipes/raw-asgi.md walks through it.
"""

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from asgi_cleanup import CleanupMiddleware, CleanupRegistry

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

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


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    cleanup: CleanupRegistry = scope["cleanup"]
    cleanup.register(close_session, f"raw {scope['path']}", cleanup)
    if scope["path"] == "/error":
        raise RuntimeError("the endpoint failed")
    status, body = (200, b"hello\n") if scope["path"] == "/" else (404, b"not found\n")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


app = CleanupMiddleware(inner_app, settings=Path(__file__).with_name("cleanup.toml"))
