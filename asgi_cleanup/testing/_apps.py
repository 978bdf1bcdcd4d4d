"""Finding the ``CleanupMiddleware`` layers of an app, and waiting for their cleanups."""

from collections.abc import Iterator
from functools import partial
from typing import Any, Protocol

from anyio.from_thread import BlockingPortal

from ..middleware import CleanupMiddleware

# Where ASGI layers keep the app they wrap: Starlette's and most middlewares' ``app``, a
# Starlette or FastAPI app's built ``middleware_stack``, Quart's ``asgi_app`` when replaced.
_INNER = ("app", "middleware_stack", "asgi_app")


class Client(Protocol):
    """What is needed of Starlette's ``TestClient``: its app, and its event loop's portal
    (``None`` outside ``with TestClient(app) as client:``)."""

    app: Any
    portal: BlockingPortal | None


def find_middlewares(app: Any) -> list[CleanupMiddleware]:
    """The ``CleanupMiddleware`` layers in ``app``: itself, or those found down the layers it
    wraps. A Starlette or FastAPI app whose middleware stack is not built yet (it is built at
    its first call) has it built now, as its first call would.

    :raises LookupError: if there is none.
    """
    found = [layer for layer in _layers(app) if isinstance(layer, CleanupMiddleware)]
    if not found:
        raise LookupError(
            f"no CleanupMiddleware found in {app!r}: pass the CleanupMiddleware itself"
        )
    return found


def _layers(app: Any) -> Iterator[Any]:
    seen: set[int] = set()
    todo = [app]
    while todo:
        layer = todo.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        if isinstance(layer, CleanupMiddleware):
            continue  # one nested inside joins its phases: nothing more to find
        build = getattr(layer, "build_middleware_stack", None)
        if getattr(layer, "middleware_stack", False) is None and callable(build):
            layer.middleware_stack = build()
        for name in _INNER:
            inner = getattr(layer, name, None)
            if inner is not None and not callable(getattr(inner, "__func__", None)):
                todo.append(inner)


async def drain(*apps: Any) -> None:
    """Wait until every cleanup of the ``CleanupMiddleware`` layers in ``apps`` has ended:
    phases that run in a task of their own (the app raised or left its response unfinished)
    and cleanups left behind past their timeout included. ``CleanupMiddleware.drain()`` for
    each; call it in the event loop that served the requests, and bound it with
    ``anyio.fail_after`` if needed.

    :raises LookupError: if an app holds no ``CleanupMiddleware``.
    """
    for middleware in [middleware for app in apps for middleware in find_middlewares(app)]:
        await middleware.drain()


def drain_client(client: Client) -> None:
    """:func:`drain` for the app of Starlette's ``TestClient``, from the test's thread, in the
    client's event loop: inside ``with TestClient(app) as client:``, where its requests share
    one loop that the cleanups run in.

    :raises RuntimeError: if the client is not open (outside ``with``, each request has a loop
        of its own, ended when the request returns).
    """
    portal = client.portal
    if portal is None:
        raise RuntimeError(
            "drain_client() needs an open TestClient: use it as `with TestClient(app) as client:`"
            " so that its requests and their cleanups share one event loop"
        )
    portal.call(partial(drain, client.app))
