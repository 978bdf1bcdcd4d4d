"""examples/recipes/litestar_app.py, outermost (as written) and in Litestar's middleware list."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import pytest
from litestar import Litestar, Request
from litestar.middleware import DefineMiddleware
from recipe_support import cleanups_run, client_for, lifespan, root_logging_kept, websocket_echo

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup.litestar import cleanup_registry, provide_cleanup_registry

with root_logging_kept():  # Litestar's default logging config takes over the root logger
    litestar_app = importlib.import_module("litestar_app")

pytestmark = pytest.mark.anyio

PLACEMENTS = ["outermost", "middleware-list"]


def app_for(placement: str, **options: Any) -> Any:
    if placement == "outermost":
        return litestar_app.app
    # The same handlers and dependencies, with the middleware in Litestar's own list. (No
    # logging config: the example's default one would take over the root logger again.)
    return Litestar(
        route_handlers=litestar_app.route_handlers,
        dependencies=litestar_app.dependencies,
        middleware=[DefineMiddleware(CleanupMiddleware, settings=litestar_app.SETTINGS)],
        logging_config=None,
        **options,
    )


@pytest.fixture(autouse=True)
def _log_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_litestar_recipe_dependency_closes_its_session_after_the_response(
    placement: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for(app_for(placement)) as client:
        response = await client.get("/")

    assert response.status_code == 200
    assert response.text == "hello from litestar\n"
    assert cleanups_run(caplog) == [
        ("dynamic", "/", 200, None, True),
        ("directive", "/", 200, None, True),
    ]


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_litestar_recipe_sees_the_500_that_litestar_makes_of_an_error_in_both_places(
    placement: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Litestar turns the handler's exception into its 500 response inside each route, so
    # the middleware sees a complete 500 and no exception wherever it is.
    async with client_for(app_for(placement)) as client:
        response = await client.get("/error")

    assert response.status_code == 500
    assert cleanups_run(caplog) == [
        ("dynamic", "/error", 500, None, True),
        ("directive", "/error", 500, None, True),
    ]


@pytest.mark.parametrize(("placement", "ran"), [("outermost", True), ("middleware-list", False)])
async def test_litestar_middleware_list_does_not_see_requests_that_match_no_route(
    placement: str, ran: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for(app_for(placement)) as client:
        response = await client.get("/no-such-page")

    assert response.status_code == 404
    expected = [("directive", "/no-such-page", 404, None, True)] if ran else []
    assert cleanups_run(caplog) == expected


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_litestar_recipe_provider_works_for_a_websocket(
    placement: str, caplog: pytest.LogCaptureFixture
) -> None:
    sent = await websocket_echo(app_for(placement), "/ws", "ping")

    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert cleanups_run(caplog) == [
        ("dynamic", "/ws", None, None, True),
        ("directive", "/ws", None, None, True),
    ]


def test_litestar_middleware_list_builds_one_middleware_per_route_handler() -> None:
    made: list[CleanupMiddleware] = []

    def counting(app: Any, **options: Any) -> CleanupMiddleware:
        made.append(CleanupMiddleware(app, **options))
        return made[-1]

    Litestar(
        route_handlers=litestar_app.route_handlers,
        dependencies=litestar_app.dependencies,
        middleware=[DefineMiddleware(counting, settings=litestar_app.SETTINGS)],
        logging_config=None,
    )

    # One for each of the example's three handlers, and one for each handler Litestar adds
    # itself (OPTIONS for each path, the OpenAPI schema routes): each loads the settings and
    # has its own worker threads.
    assert len(made) > len(litestar_app.route_handlers)
    assert len({id(m.app) for m in made}) == len(made)


async def test_litestar_recipe_lifespan_passes_through_the_middleware() -> None:
    assert await lifespan(litestar_app.app) == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_litestar_provider_without_the_middleware_says_how_to_install_it() -> None:
    with pytest.raises(RuntimeError, match=r"DefineMiddleware\(CleanupMiddleware\)"):
        await provide_cleanup_registry({"type": "http"})  # type: ignore[typeddict-item]


def test_litestar_helper_finds_the_registry_or_says_how_to_install_it() -> None:
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": []}
    with pytest.raises(RuntimeError, match=r"CleanupMiddleware\(Litestar\(\.\.\.\)\)"):
        cleanup_registry(Request(scope))  # type: ignore[arg-type]
