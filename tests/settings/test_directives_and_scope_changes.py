"""Which directive cleanups run, when the app mutates the scope it was given."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from asgi_cleanup import CleanupMiddleware, Outcome

pytestmark = pytest.mark.anyio


async def test_outer_location_directives_match_the_path_the_request_came_in_with() -> None:
    # Starlette's Router does scope.update(child_scope) on the very dict it was given: after a
    # Mount("/admin") the outer scope's root_path is "/admin". The outermost middleware must
    # match its [[location]] path="/admin" against the route path of the request as the
    # middleware received it ("/admin/users", root_path ""), not as the app left it.
    ran: list[str] = []

    def admin_cleanup(outcome: Outcome) -> None:
        ran.append("admin")

    def root_cleanup(outcome: Outcome) -> None:
        ran.append("root")

    async def users(request: Request) -> Response:
        return PlainTextResponse("users")

    admin = Starlette(routes=[Route("/users", users)])
    app = Starlette(routes=[Mount("/admin", app=admin)])
    middleware = CleanupMiddleware(
        app,
        settings={
            "location": [
                {"path": "/", "handlers": [root_cleanup]},
                {"path": "/admin", "handlers": [admin_cleanup]},
            ]
        },
    )
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/admin/users")
    assert response.status_code == 200
    assert ran == ["root", "admin"]


async def test_outer_location_directives_run_for_an_app_error_under_a_mount() -> None:
    ran: list[str] = []

    def admin_cleanup(outcome: Outcome) -> None:
        ran.append(f"admin {type(outcome.exception).__name__}")

    async def boom(request: Request) -> Response:
        raise LookupError("app failed")

    admin = Starlette(routes=[Route("/boom", boom)])
    app = Starlette(routes=[Mount("/admin", app=admin)])
    middleware = CleanupMiddleware(
        app, settings={"location": [{"path": "/admin", "handlers": [admin_cleanup]}]}
    )
    transport = httpx.ASGITransport(app=middleware, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/admin/boom")
        await middleware.drain()
    assert response.status_code == 500
    assert ran == ["admin LookupError"]
