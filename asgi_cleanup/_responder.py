"""A request's responder: passes the app's messages to the server, watching how the response
goes, and makes the request's cleanup phase when the app call is over (Starlette's GZip and
ServerErrorMiddleware watch ``send`` the same way)."""

from functools import partial
from time import perf_counter

from ._handlers import handler_key
from ._phases import Phases
from ._types import Message, Receive, Scope, Send
from .outcome import Outcome
from .phase import CleanupPhase
from .registry import CleanupRegistry, Directive, begin_phase, freeze

_START_TYPES = frozenset({"http.response.start", "websocket.http.response.start"})
# Besides a final http.response.body, what can end a response, and the key that says more
# follows (None: always the last).
_ENDS = {
    "http.response.trailers": "more_trailers",
    "http.response.pathsend": None,
    "http.response.zerocopysend": "more_body",
    "websocket.http.response.body": "more_body",
    "websocket.close": None,
}


class Responder:
    """One request's own state: passes its messages on, watching how the response goes, and
    makes its cleanup phase when the app call is over."""

    __slots__ = ("_began", "_receive", "_send", "closed_by_client", "disconnected", "first", "last")

    def __init__(self, send: Send, receive: Receive) -> None:
        self._send = send
        self._receive = receive
        # The first message (the response start; websocket: a denial's start, the accept or
        # the close) and the last one handed to the server's send.
        self.first: Message | None = None
        self.last: Message | None = None
        self.disconnected = False
        self.closed_by_client = False  # the client closed the websocket
        self._began = perf_counter()

    async def send(self, message: Message) -> None:
        if self.first is None and message["type"] != "http.response.debug":
            self.first = message
        # Noted before the await: a disconnect the server reports while still in send()
        # (hypercorn ends the stream there) then comes after the last message, and a
        # cancellation that interrupts send() does not undo what went out.
        previous, self.last = self.last, message
        try:
            await self._send(message)
        except Exception:
            # It did not go out: a client that went away, unless the response was already
            # complete (then the app sent past its end).
            self.last = previous
            if self._send is not _send_after_return and not self.complete():
                self.disconnected = True
            raise

    async def receive(self) -> Message:
        message = await self._receive()
        kind = message["type"]
        if kind == "http.disconnect":
            if not self.complete():
                self.disconnected = True
        elif kind == "websocket.disconnect" and not self.complete():
            self.disconnected = self.closed_by_client = True
        return message

    def phase(
        self,
        phases: Phases,
        scope: Scope,
        registry: CleanupRegistry,
        directives: tuple[Directive, ...],
        exc: BaseException | None,
    ) -> CleanupPhase | None:
        """The app call is over (``exc``: what it raised): let go of the server's send and
        receive, freeze ``registry``, and make the request's cleanup phase, if it has any."""
        self._send, self._receive = _send_after_return, _receive_after_return
        entries, nested = freeze(registry)
        if not entries and not directives and not nested:
            return None
        directives = _with_nested(directives, nested)
        duration = perf_counter() - self._began
        start = self.first
        status = start["status"] if start is not None and start["type"] in _START_TYPES else None
        error = exc if isinstance(exc, Exception) else None
        complete, disconnected = self.complete(), self.disconnected
        begin_phase(
            registry, partial(Outcome, scope, status, error, complete, disconnected, duration), exc
        )
        return CleanupPhase(phases, registry, entries, directives)

    def complete(self) -> bool:
        """Whether the response's last message went out (websocket: the close, either way)."""
        message = self.last
        if message is not None:
            kind = message["type"]
            if kind == "http.response.body":  # the common case first
                trailers = self.first is not None and self.first.get("trailers")
                return not message.get("more_body") and not trailers
            if kind in _ENDS:
                more = _ENDS[kind]
                if more is None or not message.get(more):
                    return True
        return self.closed_by_client


async def _send_after_return(message: Message) -> None:
    raise RuntimeError(f"ASGI send() called after the app call returned: {message['type']!r}")


async def _receive_after_return() -> Message:
    raise RuntimeError("ASGI receive() called after the app call returned")


def _with_nested(
    own: tuple[Directive, ...], nested: list[Directive] | None
) -> tuple[Directive, ...]:
    """The outer middleware's directives, then those nested middlewares added, each once."""
    if not nested:
        return own
    merged: dict[object, Directive] = {}
    for directive in (*own, *nested):
        merged.setdefault(handler_key(directive), directive)
    return tuple(merged.values())
