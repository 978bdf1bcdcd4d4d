"""Starlette: as its middleware or outermost, with background tasks, nested on a mount."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from asgi_cleanup import CleanupMiddleware, CleanupRegistry, Outcome

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

pytestmark = pytest.mark.anyio


class CleanupError(RuntimeError):
    pass


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def cleanup_layer(app: Starlette) -> CleanupMiddleware | None:
    """The CleanupMiddleware in a started Starlette app's middleware stack."""
    layer: Any = app.middleware_stack
    while layer is not None and not isinstance(layer, CleanupMiddleware):
        layer = getattr(layer, "app", None)
    return layer


def http_scope(path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def test_starlette_middleware_list_applies_it_with_its_options() -> None:
    ran: list[str] = []

    async def homepage(request: Request) -> Response:
        async def cleanup() -> None:
            ran.append("cleanup")

        request.scope["cleanup"].register(cleanup)
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/", homepage)],
        middleware=[Middleware(CleanupMiddleware, timeout=1.0)],
    )
    async with client_for(app) as client:
        response = await client.get("/")

    assert response.status_code == 200
    assert response.text == "ok"
    assert ran == ["cleanup"]
    layer = cleanup_layer(app)
    assert layer is not None
    assert layer.timeout == 1.0


@pytest.mark.parametrize(
    ("options", "shutdown_timeout"), [({}, 30.0), ({"shutdown_timeout": 2.0}, 2.0)]
)
async def test_starlette_add_middleware_applies_it(
    options: dict[str, Any], shutdown_timeout: float
) -> None:
    ran: list[str] = []

    async def homepage(request: Request) -> Response:
        async def cleanup() -> None:
            ran.append("cleanup")

        request.scope["cleanup"].register(cleanup)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", homepage)])
    app.add_middleware(CleanupMiddleware, **options)
    async with client_for(app) as client:
        response = await client.get("/")

    assert response.status_code == 200
    assert response.text == "ok"
    assert ran == ["cleanup"]
    layer = cleanup_layer(app)
    assert layer is not None
    assert layer.shutdown_timeout == shutdown_timeout


@pytest.mark.parametrize("placement", ["starlette-middleware", "outermost"])
async def test_failing_cleanup_is_hidden_from_client_in_starlette_debug_mode(
    placement: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asgi_cleanup")
    error = CleanupError("cleanup exploded")
    ran: list[str] = []

    async def next_cleanup() -> None:
        ran.append("next cleanup")

    async def failing_cleanup() -> None:
        raise error

    async def homepage(request: Request) -> Response:
        request.scope["cleanup"].register(next_cleanup)
        request.scope["cleanup"].register(failing_cleanup)
        return PlainTextResponse("ok")

    app: Any
    if placement == "outermost":
        app = CleanupMiddleware(Starlette(debug=True, routes=[Route("/", homepage)]))
    else:
        app = Starlette(
            debug=True, routes=[Route("/", homepage)], middleware=[Middleware(CleanupMiddleware)]
        )
    async with client_for(app) as client:
        response = await client.get("/", headers={"accept": "text/html"})

    assert response.status_code == 200
    assert response.text == "ok"
    assert ran == ["next cleanup"]
    errors = [r for r in caplog.records if r.name == "asgi_cleanup" and r.levelno >= logging.ERROR]
    assert len(errors) == 1, caplog.text
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[1] is error
    assert "failing_cleanup" in errors[0].getMessage()


@pytest.mark.parametrize("debug", [True, False])
async def test_app_exception_reaches_caller_and_starlette_still_answers_500(debug: bool) -> None:
    error = RuntimeError("boom in the endpoint")
    outcomes: list[Outcome | None] = []

    async def homepage(request: Request) -> Response:
        registry = request.scope["cleanup"]

        async def cleanup() -> None:
            outcomes.append(registry.outcome)

        registry.register(cleanup)
        raise error

    middleware = CleanupMiddleware(Starlette(debug=debug, routes=[Route("/", homepage)]))
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(RuntimeError, match="boom in the endpoint") as info:
        await middleware(http_scope("/", [(b"accept", b"text/html")]), receive, send)

    assert info.value is error
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 500
    body = sent[1]["body"]
    if debug:
        assert dict(sent[0]["headers"])[b"content-type"].startswith(b"text/html")
        assert b"boom in the endpoint" in body
    else:
        assert body == b"Internal Server Error"

    assert outcomes == []  # the phase runs in a task of its own
    with anyio.fail_after(2):
        await middleware.drain()
    (outcome,) = outcomes
    assert outcome is not None
    assert outcome.exception is error
    assert outcome.status == 500
    assert outcome.response_complete is True


async def test_app_exception_through_httpx_is_the_same_object() -> None:
    error = RuntimeError("boom in the endpoint")
    ran: list[str] = []

    async def homepage(request: Request) -> Response:
        async def cleanup() -> None:
            ran.append("cleanup")

        request.scope["cleanup"].register(cleanup)
        raise error

    middleware = CleanupMiddleware(Starlette(debug=True, routes=[Route("/", homepage)]))
    async with client_for(middleware) as client:
        with pytest.raises(RuntimeError, match="boom in the endpoint") as info:
            await client.get("/")

    assert info.value is error
    with anyio.fail_after(2):
        await middleware.drain()
    assert ran == ["cleanup"]


async def test_background_tasks_run_before_cleanups_and_may_register_cleanups() -> None:
    log: list[str] = []

    async def registered_by_endpoint() -> None:
        log.append("cleanup registered by endpoint")

    async def registered_by_background_task() -> None:
        log.append("cleanup registered by background task")

    async def homepage(request: Request) -> Response:
        registry = request.scope["cleanup"]
        registry.register(registered_by_endpoint)

        async def background() -> None:
            log.append("background task")
            registry.register(registered_by_background_task)

        return PlainTextResponse("ok", background=BackgroundTask(background))

    app = CleanupMiddleware(Starlette(routes=[Route("/", homepage)]))
    async with client_for(app) as client:
        response = await client.get("/")

    assert response.text == "ok"
    assert log == [
        "background task",
        "cleanup registered by background task",
        "cleanup registered by endpoint",
    ]


async def test_nested_middleware_on_mount_joins_outer_registry_and_phase() -> None:
    registries: dict[str, Any] = {}
    runs: list[str] = []

    async def sub_endpoint(request: Request) -> Response:
        registry = request.scope["cleanup"]
        registries["sub"] = registry

        async def sub_cleanup() -> None:
            runs.append("sub")

        registry.register(sub_cleanup)
        return PlainTextResponse("sub ok")

    sub_app = Starlette(routes=[Route("/", sub_endpoint)])
    main_app = Starlette(routes=[Mount("/sub", app=CleanupMiddleware(sub_app))])

    async def after_mount() -> None:
        runs.append("after mount")

    async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
        registries["outer"] = scope["cleanup"]
        await main_app(scope, receive, send)
        # A second phase run by the nested middleware would have frozen the registry by now.
        scope["cleanup"].register(after_mount)

    async with client_for(CleanupMiddleware(recorder)) as client:
        response = await client.get("/sub/")

    assert response.status_code == 200
    assert response.text == "sub ok"
    assert isinstance(registries["outer"], CleanupRegistry)
    assert registries["sub"] is registries["outer"]
    assert runs == ["after mount", "sub"]
    assert registries["outer"].frozen
    assert len(registries["outer"]) == 0
