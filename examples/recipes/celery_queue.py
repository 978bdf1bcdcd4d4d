"""The Celery recipe: a Starlette app hands an audit job to Celery after each order's response,
with how the request ended.

    redis-server --port 6379 &
    celery --workdir examples/recipes -A celery_queue:celery worker --pool solo -l INFO &
    uvicorn celery_queue:app --app-dir examples/recipes
    curl -i -X POST http://127.0.0.1:8000/orders/7   # 200; then the worker logs the audit

docs/recipes/celery.md walks through it.
"""

import logging
import os
from typing import Any

from celery import Celery
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup.starlette import cleanup_registry

log = logging.getLogger(__name__)

celery = Celery("celery_queue", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


@celery.task(name="celery_queue.audit")
def audit(order_id: int, cleanup_outcome: dict[str, Any] | None = None) -> None:
    """Runs in the Celery worker, once the web process has answered."""
    assert cleanup_outcome is not None
    log.warning("audit: order %s ended with status %s", order_id, cleanup_outcome["status"])


async def order(request: Request) -> JSONResponse:
    order_id = request.path_params["order_id"]
    # Published after the response, in a worker thread: never in front of the client.
    cleanup_registry(request).register_job(audit, order_id, with_outcome=True)
    return JSONResponse({"order": order_id})


app = CleanupMiddleware(
    Starlette(
        routes=[
            Route("/orders/{order_id:int}", order, methods=["POST"]),
            Route("/health", lambda request: PlainTextResponse("ok")),  # registers nothing
        ]
    ),
    queue="celery",
    celery_app=celery,
)
