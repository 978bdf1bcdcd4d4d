"""The arq recipe: a Starlette app hands an audit job to arq after each order's response, with
how the request ended. arq runs on asyncio only.

    redis-server --port 6379 &
    PYTHONPATH=examples/recipes arq arq_queue.WorkerSettings &
    uvicorn arq_queue:app --app-dir examples/recipes
    curl -i -X POST http://127.0.0.1:8000/orders/7   # 200; then the worker logs the audit

docs/recipes/arq.md walks through it.
"""

import logging
import os
from typing import Any

from arq.connections import RedisSettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup.starlette import cleanup_registry

log = logging.getLogger(__name__)

REDIS = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


async def audit(ctx: dict[str, Any], order_id: int, cleanup_outcome: dict[str, Any]) -> None:
    """Runs in the arq worker, once the web process has answered."""
    log.warning("audit: order %s ended with status %s", order_id, cleanup_outcome["status"])


class WorkerSettings:
    """``arq arq_queue.WorkerSettings``: the worker's functions and Redis."""

    functions = [audit]  # noqa: RUF012 - arq reads the class
    redis_settings = REDIS


async def order(request: Request) -> JSONResponse:
    order_id = request.path_params["order_id"]
    # Enqueued after the response, under the job id asgi-cleanup gives it: never twice.
    cleanup_registry(request).register_job("audit", order_id, with_outcome=True)
    return JSONResponse({"order": order_id})


app = CleanupMiddleware(
    Starlette(
        routes=[
            Route("/orders/{order_id:int}", order, methods=["POST"]),
            Route("/health", lambda request: PlainTextResponse("ok")),  # registers nothing
        ]
    ),
    queue="arq",
    arq_redis=REDIS,
)
