from typing import NamedTuple

from ._types import Scope


class Outcome(NamedTuple):
    """How a request ended, as the middleware saw it.

    Built once the app call has finished, and only for a request that has cleanups to run.
    Read-only (a named tuple: cheaper to build than a frozen dataclass on every request).
    Directive cleanups receive it as their single argument; dynamic cleanups read it from
    ``scope["cleanup"].outcome``.

    :param scope: the ASGI scope of the request.
    :param status: the HTTP status the app sent, or ``None`` if it started no response (the
        server then answers with its own 500, which the middleware does not see). For a
        websocket, the status of a denial response (``websocket.http.response.start``).
    :param exception: the ``Exception`` the app raised, or ``None``; also ``None`` when the app
        call was cancelled.
    :param response_complete: ``True`` if the response's last message went out: the final
        ``http.response.body``, an ``http.response.pathsend`` or ``http.response.zerocopysend``,
        or the last ``http.response.trailers`` when trailers were announced; for a websocket,
        the close (sent by the app, or ``websocket.disconnect`` received).
    :param client_disconnected: ``True`` if the client went away before the response was
        complete, as far as the server said so: a disconnect message received before the last
        message went out, or a ``send`` that raised. Servers that silently drop messages to a
        gone client (uvicorn, hypercorn) give no sign to an app that never calls ``receive()``.
    :param duration: seconds from the app being called to the app call finishing.
    """

    scope: Scope
    status: int | None
    exception: Exception | None
    response_complete: bool
    client_disconnected: bool
    duration: float
