"""The apps of the served benchmark, as module attributes a server imports (``MODULE:ATTR``).

They are made by the factories of :mod:`benchmarks.scenarios`, so they are the in-process
scenarios of the same names: a Starlette hello world, bare, behind the minimal middleware that
wraps ``send`` to watch the status (the floor for any middleware that must see the response),
with one async no-op cleanup registered per request, with a ``BackgroundTask`` running the
same no-op, and behind ``FloorMiddleware`` (the contract's own mechanics, none of this
package's code).
"""

from asgi_cleanup import CleanupMiddleware

from .scenarios import (
    FloorMiddleware,
    StatusWatchingMiddleware,
    async_noop,
    background,
    hello,
    registering,
    starlette_app,
)

MODULE = "benchmarks.served_apps"

#: scenario name (as in benchmarks/scenarios.py) -> attribute of this module.
APPS: dict[str, str] = {
    "bare": "bare",
    "send-watching middleware": "send_watching",
    "1 async cleanup": "one_async_cleanup",
    "BackgroundTask, 1 async": "background_task",
    "floor, own task and cancel scope: 1 async": "floor",
}
FLOOR = "floor, own task and cancel scope: 1 async"  # see FloorMiddleware

bare = starlette_app(hello)
send_watching = StatusWatchingMiddleware(starlette_app(hello))
one_async_cleanup = CleanupMiddleware(starlette_app(registering(async_noop, 1)))
background_task = starlette_app(background(async_noop, 1))
floor = FloorMiddleware(starlette_app(registering(async_noop, 1)), scoped=True)
