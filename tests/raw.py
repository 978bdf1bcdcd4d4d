"""Hand-built ASGI calls for tests: a scope, a scripted receive, and a recording send."""

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio

from asgi_cleanup._types import ASGIApp, Message, Receive, Scope, Send


def http_scope(path: str = "/", method: str = "GET", **extra: Any) -> Scope:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    scope.update(extra)
    return scope


class Recorder:
    """A scripted ``receive`` and a recording ``send``.

    ``receive`` returns the scripted messages in order, then waits forever (as a server
    does until the client goes away), unless ``disconnect_after`` is set.
    """

    def __init__(self, incoming: Iterable[Message] = ()) -> None:
        self.incoming = list(incoming) or [
            {"type": "http.request", "body": b"", "more_body": False}
        ]
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.incoming:
            return self.incoming.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


async def call(
    app: ASGIApp, scope: Scope | None = None, recorder: Recorder | None = None
) -> Recorder:
    recorder = recorder or Recorder()
    await app(scope or http_scope(), recorder.receive, recorder.send)
    return recorder


def respond(status: int = 200, body: bytes = b"ok") -> list[Message]:
    return [
        {"type": "http.response.start", "status": status, "headers": []},
        {"type": "http.response.body", "body": body},
    ]


def app_registering(*cleanups: Callable[..., Any]) -> ASGIApp:
    """An app that registers ``cleanups`` in order (so they run in reverse), then sends a
    complete 200 response."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for cleanup in cleanups:
            scope["cleanup"].register(cleanup)
        for message in respond():
            await send(message)

    return app


async def run_lifespan(app: ASGIApp) -> None:
    """Call ``app`` with a lifespan scope whose receive gives startup, then shutdown."""
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        pass

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)


async def serve_lifespan(receive: Receive, send: Send, log: list[str]) -> None:
    """An app's side of the lifespan: complete the startup, log ``"app sees shutdown"`` when
    the shutdown comes, and complete it."""
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await receive()
    log.append("app sees shutdown")
    await send({"type": "lifespan.shutdown.complete"})


async def returns_only_after(
    release: Callable[[], object], wait: Callable[[], Awaitable[object]], log: list[str]
) -> None:
    """Start ``wait()``; check that it is still waiting while the event loop goes on and
    that ``log`` is still empty; then ``release()``: ``wait()`` must return soon after."""
    done = anyio.Event()

    async def waiter() -> None:
        await wait()
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.2)  # the event loop is not blocked by the wait
        assert not done.is_set()
        assert log == []
        release()
        with anyio.fail_after(2):
            await done.wait()
