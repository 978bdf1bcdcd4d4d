"""Server shutdown: the lifespan protocol, passed through with a drain before shutdown, and
daphne's shutdown, which has no lifespan, through its Twisted reactor."""

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ._types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("asgi_cleanup")


async def serve_lifespan(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    before_shutdown: Callable[[], Awaitable[None]],
) -> None:
    """Pass a lifespan scope to ``app``, awaiting ``before_shutdown()`` when the server asks
    for shutdown, before the app hears of it. An app that does not speak lifespan (it raises
    before receiving or sending any lifespan message, as Django's ``ASGIHandler`` does, or
    returns without sending one) has the protocol answered for it; anything else the app does
    is passed through, a startup that raises too."""
    received: set[str] = set()
    answered = False

    async def lifespan_receive() -> Message:
        message = await receive()
        received.add(message["type"])
        if message["type"] == "lifespan.shutdown":
            await before_shutdown()
        return message

    async def lifespan_send(message: Message) -> None:
        nonlocal answered
        answered = True
        await send(message)

    try:
        await app(scope, lifespan_receive, lifespan_send)
    except Exception as exc:
        if answered or received:
            raise  # it took part in the protocol: a failed startup is the server's to see
        logger.info(
            "The app rejected the lifespan protocol (%s: %s); the middleware answers it, "
            "and waits for running cleanups at shutdown",
            type(exc).__name__,
            exc,
        )
    if answered:
        return
    if "lifespan.startup" not in received:
        await receive()
    await send({"type": "lifespan.startup.complete"})
    if "lifespan.shutdown" not in received:
        await receive()
        await before_shutdown()
    await send({"type": "lifespan.shutdown.complete"})


def hook_twisted_shutdown(drain: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Under a running Twisted reactor (daphne), have its shutdown wait for ``drain()``, as a
    lifespan shutdown would: daphne cancels every request's task at once and stops when the
    first has ended."""
    module = sys.modules.get("twisted.internet.reactor")  # installed, never imported here
    if module is None or not getattr(module, "running", False):
        return
    from twisted.internet.defer import Deferred

    def before_shutdown() -> Deferred[None]:
        return Deferred.fromFuture(asyncio.ensure_future(drain()))

    module.addSystemEventTrigger("before", "shutdown", before_shutdown)
