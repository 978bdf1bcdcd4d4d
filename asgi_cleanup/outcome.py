"""How a request ended (``Outcome``) and what became of each of its cleanups (``CleanupReport``)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._types import Scope


@dataclass(frozen=True, slots=True, repr=False)
class Outcome:
    """How a request ended, as the middleware saw it.

    Built once the app call has finished, for a request that has cleanups to run. Directive
    cleanups receive it as their single argument; dynamic cleanups read it from
    ``scope["cleanup"].outcome``. Frozen and not a tuple: it cannot be unpacked, it equals
    only another ``Outcome``, and later versions may add fields.
    """

    scope: Scope
    """The ASGI scope of the request."""

    status: int | None
    """The HTTP status the app sent, or ``None`` if it started no response (the server then
    answers with its own 500, which the middleware does not see). For a websocket, the status
    of a denial response (``websocket.http.response.start``), else ``None``."""

    exception: Exception | None
    """The ``Exception`` the app raised, or ``None``; also ``None`` when the app call was
    cancelled."""

    response_complete: bool
    """Whether the response's last message went out: the final ``http.response.body``, an
    ``http.response.pathsend`` or ``http.response.zerocopysend``, or the last
    ``http.response.trailers`` when trailers were announced; for a websocket, the close (sent
    by the app, or ``websocket.disconnect`` received)."""

    client_disconnected: bool
    """Whether the client went away before the response was complete, as far as the server
    said so: a disconnect message received before the last message went out, or a ``send``
    that raised. Servers that silently drop messages to a gone client (uvicorn, hypercorn)
    give no sign to an app that never calls ``receive()``."""

    duration: float
    """Seconds from the app being called to the app call finishing."""

    def __repr__(self) -> str:
        # The scope holds headers and the query string: keep them out of reprs and logs.
        path: Any = self.scope.get("path")
        return (
            f"Outcome(path={path!r}, status={self.status!r}, exception={self.exception!r}, "
            f"response_complete={self.response_complete!r}, "
            f"client_disconnected={self.client_disconnected!r}, duration={self.duration:.6f})"
        )


@dataclass(frozen=True, slots=True)
class CleanupReport:
    """What became of one cleanup, for the ``on_complete`` hook."""

    cleanup: Callable[..., Any]
    """The cleanup: the callable registered, a context manager's exit, or a directive."""

    duration: float
    """Seconds it ran (for one abandoned at its timeout, until it was given up)."""

    exception: BaseException | None
    """What it raised, a ``TimeoutError`` if it timed out, or ``None`` if it succeeded."""

    timed_out: bool
    """Whether it was abandoned for overrunning the middleware's ``timeout``."""


ErrorHook = Callable[[Callable[..., Any], BaseException, Outcome], Any]
CompleteHook = Callable[[tuple[CleanupReport, ...], Outcome], Any]
