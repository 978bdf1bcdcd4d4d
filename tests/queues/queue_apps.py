"""The app the queue tests serve with uvicorn: every request registers one job of the queue
named by ``ASGI_CLEANUP_QUEUE`` (``queue_jobs``'s ``record``, with the request's tag), and
``on_complete`` appends a JSON line per request to ``ASGI_CLEANUP_MARKS``: when its cleanups
ended and their reports.

- ``/ok/TAG``: 200, the job with its outcome summary;
- ``/plain/TAG``: 200, the job without it;
- ``/raise/TAG``: the app raises after registering (the server sends its 500);
- ``/stream/TAG``: a first chunk, then the app waits for the client to leave;
- ``/durable/TAG``: 200, a durable job with its outcome (``ASGI_CLEANUP_DURABLE_GRACE``);
- ``/durable-sleep/TAG``, ``/plain-sleep/TAG``: 200, a durable (or plain) job with its outcome,
  then a cleanup that sleeps ``SLEEP`` seconds: it runs first (last registered, first run), so
  the job's release (or enqueue) waits behind it;
- ``/health``: no job.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import queue_jobs

from asgi_cleanup import CleanupMiddleware, CleanupReport, Outcome

QUEUE = os.environ.get("ASGI_CLEANUP_QUEUE", "arq")
MARKS = os.environ.get("ASGI_CLEANUP_MARKS")
TIMEOUT = float(os.environ.get("ASGI_CLEANUP_TIMEOUT", "5"))
GRACE = float(os.environ.get("ASGI_CLEANUP_DURABLE_GRACE", "30"))
SLEEP = 2.0  # shorter than the tests' durable_grace (3 s)
JOB: Any = queue_jobs.record if QUEUE == "celery" else "arq_record"


async def inner_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    route, _, tag = scope["path"][1:].partition("/")
    if route in ("ok", "plain", "raise", "stream", "plain-sleep"):
        scope["cleanup"].register_job(JOB, tag, with_outcome=route != "plain")
    elif route in ("durable", "durable-sleep"):
        await scope["cleanup"].register_job(JOB, tag, with_outcome=True, durable=True)
    if route.endswith("-sleep"):
        scope["cleanup"].register(asyncio.sleep, SLEEP)
    if route == "raise":
        raise RuntimeError("the app failed")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if route == "stream":
        await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        return
    await send({"type": "http.response.body", "body": b"ok"})


def on_complete(reports: Sequence[CleanupReport], outcome: Outcome) -> None:
    if MARKS is None:
        return
    mark = {
        "path": outcome.scope["path"],
        "done_at": time.time(),
        "reports": [
            {
                "duration": r.duration,
                "exception": None if r.exception is None else type(r.exception).__name__,
                "timed_out": r.timed_out,
            }
            for r in reports
        ],
    }
    with open(MARKS, "a", encoding="utf-8") as file:
        file.write(json.dumps(mark) + "\n")


celery_app = queue_jobs.celery_app if QUEUE == "celery" else None
arq_url = queue_jobs.REDIS_URL if QUEUE == "arq" else None
app = CleanupMiddleware(
    inner_app,
    queue=QUEUE,
    celery_app=celery_app,
    arq_redis_url=arq_url,
    timeout=TIMEOUT,
    on_complete=on_complete,
    durable_grace=GRACE,
)
