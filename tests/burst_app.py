"""The app of the ``async_limit`` burst test: each request to ``/`` registers a cleanup that
holds one of ten connections of a pool for 50 ms, as a cleanup writing to a database through a
driver's pool would. Served by a real server as ``burst_app:app``.

The pool works as drivers' pools do: a checkout waits for a free connection at most
``CHECKOUT_TIMEOUT`` seconds, then fails ("pool exhausted"). ``BURST_ASYNC_LIMIT`` (an int, or
``none``) is the middleware's ``async_limit``; its ``timeout`` is 30 s. ``/stats`` answers, as
JSON, how many cleanups held a connection, how many found the pool exhausted, the most
connections in use at once and the most cleanups waiting in the pool's queue at once (for
no free connection).
"""

from __future__ import annotations

import json
import os
from typing import Any

import anyio

from asgi_cleanup import CleanupMiddleware

POOL_SIZE = 10
HOLD_SECONDS = 0.05
CHECKOUT_TIMEOUT = 2.0


class FixedPool:
    def __init__(self) -> None:
        self.stats = {"held": 0, "exhausted": 0, "max_in_use": 0, "max_waiting": 0}
        self._semaphore: anyio.Semaphore | None = None
        self._in_use = self._waiting = 0

    async def hold_connection(self) -> None:
        if self._semaphore is None:
            self._semaphore = anyio.Semaphore(POOL_SIZE)
        queued = self._in_use >= POOL_SIZE  # no free connection: it waits in the pool's queue
        self._waiting += queued
        self.stats["max_waiting"] = max(self.stats["max_waiting"], self._waiting)
        try:
            with anyio.fail_after(CHECKOUT_TIMEOUT):
                await self._semaphore.acquire()
        except TimeoutError:
            self.stats["exhausted"] += 1
            raise RuntimeError("pool exhausted: no free connection within 2 s") from None
        finally:
            self._waiting -= queued
        self._in_use += 1
        self.stats["max_in_use"] = max(self.stats["max_in_use"], self._in_use)
        try:
            await anyio.sleep(HOLD_SECONDS)
            self.stats["held"] += 1
        finally:
            self._in_use -= 1
            self._semaphore.release()


pool = FixedPool()


async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b"ok"
    if scope["path"] == "/":
        scope["cleanup"].register(pool.hold_connection)
    elif scope["path"] == "/stats":
        body = json.dumps(pool.stats).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


_limit = os.environ.get("BURST_ASYNC_LIMIT", "none")
app = CleanupMiddleware(inner, timeout=30, async_limit=None if _limit == "none" else int(_limit))
