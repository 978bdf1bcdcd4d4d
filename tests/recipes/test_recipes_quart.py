"""examples/recipes/quart_app.py: CleanupMiddleware around Quart's ``asgi_app``."""

from __future__ import annotations

import logging

import pytest
import quart_app
from quart import Quart
from recipe_support import cleanup_layer, cleanups_run, client_for, lifespan, websocket_echo

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup.quart import cleanup_registry

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    # Quart runs on asyncio only (its ASGI layer uses asyncio tasks; trio needs quart-trio).
    return "asyncio"


@pytest.fixture(autouse=True)
def _log_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


async def test_quart_recipe_before_request_hook_closes_its_session_after_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with client_for(quart_app.app) as client:
        response = await client.get("/")

    assert response.status_code == 200
    assert response.text == "hello from quart\n"
    assert cleanups_run(caplog) == [
        ("dynamic", "/", 200, None, True),
        ("directive", "/", 200, None, True),
    ]


async def test_quart_recipe_sees_the_500_that_quart_makes_of_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Quart turns the view's exception into its 500 response: the app call does not raise.
    async with client_for(quart_app.app) as client:
        response = await client.get("/error")

    assert response.status_code == 500
    assert cleanups_run(caplog) == [
        ("dynamic", "/error", 500, None, True),
        ("directive", "/error", 500, None, True),
    ]


async def test_quart_recipe_helper_finds_the_websocket_registry_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = await websocket_echo(quart_app.app, "/ws", "ping")

    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert cleanups_run(caplog) == [
        ("dynamic", "/ws", None, None, True),
        ("directive", "/ws", None, None, True),
    ]


async def test_quart_test_client_goes_through_the_middleware_around_asgi_app(
    caplog: pytest.LogCaptureFixture,
) -> None:
    response = await quart_app.app.test_client().get("/")
    await cleanup_layer(quart_app.app).drain()

    assert response.status_code == 200
    assert [ran[:3] for ran in cleanups_run(caplog)] == [
        ("dynamic", "/", 200),
        ("directive", "/", 200),
    ]


async def test_quart_recipe_lifespan_passes_through_the_middleware() -> None:
    assert await lifespan(quart_app.app) == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_quart_helper_without_the_middleware_says_how_to_install_it() -> None:
    bare = Quart(__name__)

    async with bare.test_request_context("/"):
        with pytest.raises(RuntimeError, match=r"app\.asgi_app = CleanupMiddleware"):
            cleanup_registry()


def test_quart_helper_outside_a_request_asks_for_the_request() -> None:
    with pytest.raises(RuntimeError, match=r"cleanup_registry\(request\)"):
        cleanup_registry()


def test_quart_recipe_keeps_app_a_quart_app() -> None:
    assert isinstance(quart_app.app, Quart)
    assert isinstance(quart_app.app.asgi_app, CleanupMiddleware)
