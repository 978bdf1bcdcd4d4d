# ASGI type aliases, copied from Starlette's starlette/types.py (BSD-3-Clause) so that
# the package does not depend on Starlette.
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What CleanupMiddleware accepts as the app it wraps: any ASGI callable, whatever types its
# framework gives scope, receive and send (Litestar and Quart use their own TypedDicts).
AnyASGIApp = Callable[[Any, Any, Any], Awaitable[Any]]
