from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from directive_handlers import CALLS
from raw import call, http_scope, respond
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from asgi_cleanup import CleanupMiddleware, Outcome, SettingsError
from asgi_cleanup._types import Receive, Scope, Send

SETTINGS = """
timeout = 2.5
handlers = ["directive_handlers:close_pools", "directive_handlers:flush_metrics"]

[[location]]
path = "/admin"
handlers = ["directive_handlers:admin_audit", "directive_handlers:close_pools"]
"""


@pytest.fixture(autouse=True)
def clear_calls() -> Iterator[None]:
    CALLS.clear()
    yield
    CALLS.clear()


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "cleanup.toml"
    path.write_text(SETTINGS)
    return path


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    scope["cleanup"].register(lambda: CALLS.append(("dynamic", None)))
    for message in respond(203):
        await send(message)


@pytest.mark.anyio
async def test_directive_cleanups_run_after_dynamic_ones_in_configured_order(
    settings_file: Path,
) -> None:
    await call(CleanupMiddleware(app, settings=settings_file), http_scope("/"))
    assert [name for name, _ in CALLS] == ["dynamic", "close_pools", "flush_metrics"]


@pytest.mark.anyio
async def test_directive_cleanups_receive_the_outcome(settings_file: Path) -> None:
    scope = http_scope("/")
    await call(CleanupMiddleware(app, settings=str(settings_file)), scope)
    outcomes = [outcome for name, outcome in CALLS if name != "dynamic"]
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert isinstance(outcome, Outcome)
        assert outcome.scope is scope
        assert outcome.status == 203


@pytest.mark.anyio
async def test_location_directives_follow_server_wide_ones_and_run_once(
    settings_file: Path,
) -> None:
    await call(CleanupMiddleware(app, settings=settings_file), http_scope("/admin/users"))
    assert [name for name, _ in CALLS] == [
        "dynamic",
        "close_pools",
        "flush_metrics",
        "admin_audit",
    ]


@pytest.mark.anyio
async def test_directive_cleanups_run_when_nothing_was_registered(settings_file: Path) -> None:
    async def quiet_app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in respond():
            await send(message)

    await call(CleanupMiddleware(quiet_app, settings=settings_file))
    assert [name for name, _ in CALLS] == ["close_pools", "flush_metrics"]


@pytest.mark.anyio
async def test_directive_cleanups_run_when_the_app_raises(settings_file: Path) -> None:
    error = RuntimeError("endpoint failed")

    async def failing_app(scope: Scope, receive: Receive, send: Send) -> None:
        raise error

    middleware = CleanupMiddleware(failing_app, settings=settings_file)
    with pytest.raises(RuntimeError) as raised:
        await call(middleware)
    assert raised.value is error
    await middleware.drain()
    assert [name for name, _ in CALLS] == ["close_pools", "flush_metrics"]
    assert all(outcome.exception is error for _, outcome in CALLS)


@pytest.mark.anyio
async def test_failing_directive_is_logged_and_the_next_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = {"handlers": ["directive_handlers:failing", "directive_handlers:close_pools"]}
    await call(CleanupMiddleware(app, settings=settings))
    assert [name for name, _ in CALLS] == ["dynamic", "close_pools"]
    assert any("directive_handlers.failing" in r.getMessage() for r in caplog.records)


def test_options_come_from_the_settings_file(settings_file: Path) -> None:
    assert CleanupMiddleware(app, settings=settings_file).timeout == 2.5


def test_keyword_options_win_over_the_settings_file_even_none(settings_file: Path) -> None:
    assert CleanupMiddleware(app, settings=settings_file, timeout=1).timeout == 1.0
    assert CleanupMiddleware(app, settings=settings_file, timeout=None).timeout is None


def test_settings_file_options_win_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(
        '[project]\nname = "x"\n\n[tool.asgi-cleanup]\n'
        "shutdown_timeout = false\nthread_limit = 2\n"
        'on_error = "directive_handlers:report_error"\n'
    )
    middleware = CleanupMiddleware(app, settings=path)
    assert middleware.shutdown_timeout is None
    assert middleware.thread_limit == 2
    assert middleware.timeout == 5.0
    assert middleware.on_error is not None
    assert middleware.on_error.__name__ == "report_error"


@pytest.mark.anyio
async def test_on_error_from_settings_reports_directive_failures() -> None:
    settings: dict[str, Any] = {
        "on_error": "directive_handlers:report_error",
        "handlers": ["directive_handlers:failing"],
    }
    await call(CleanupMiddleware(app, settings=settings))
    assert [name for name, _ in CALLS] == ["dynamic", "report_error"]
    assert isinstance(CALLS[1][1], RuntimeError)


def test_bad_settings_file_stops_construction(tmp_path: Path) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text('handlerz = ["directive_handlers:close_pools"]\n')
    with pytest.raises(SettingsError, match="handlers"):
        CleanupMiddleware(app, settings=path)


def test_missing_settings_file_stops_construction(tmp_path: Path) -> None:
    with pytest.raises(SettingsError):
        CleanupMiddleware(app, settings=tmp_path / "missing.toml")


@pytest.mark.anyio
async def test_nested_middleware_adds_its_directives_after_the_outer_ones_once() -> None:
    async def sub_endpoint(request: Request) -> PlainTextResponse:
        request.scope["cleanup"].register(lambda: CALLS.append(("dynamic", None)))
        return PlainTextResponse("sub")

    sub_app = CleanupMiddleware(
        Starlette(routes=[Route("/page", sub_endpoint)]),
        settings={
            "handlers": ["directive_handlers:close_pools", "directive_handlers:admin_audit"],
        },
    )
    outer = CleanupMiddleware(
        Starlette(routes=[Mount("/sub", app=sub_app)]),
        settings={
            "handlers": ["directive_handlers:flush_metrics", "directive_handlers:close_pools"]
        },
    )
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/sub/page")
    assert response.text == "sub"
    assert [name for name, _ in CALLS] == [
        "dynamic",
        "flush_metrics",
        "close_pools",
        "admin_audit",
    ]


@pytest.mark.anyio
async def test_nested_middlewares_run_a_bound_method_or_classmethod_handler_once() -> None:
    # Each middleware resolves its references itself: a bound method is a new object at every
    # lookup, yet both name the same handler.
    handlers = ["directive_handlers:pool.close", "directive_handlers:Pool.drain"]
    sub_app = CleanupMiddleware(
        Starlette(routes=[Route("/page", lambda request: PlainTextResponse("sub"))]),
        settings={"handlers": ["directive_handlers:same_pool.close", *handlers]},
    )
    outer = CleanupMiddleware(
        Starlette(routes=[Mount("/sub", app=sub_app)]), settings={"handlers": handlers}
    )
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/sub/page")
    assert response.status_code == 200
    assert [name for name, _ in CALLS] == ["pool.close", "Pool.drain"]


@pytest.mark.anyio
async def test_one_settings_file_runs_a_bound_method_reached_through_an_alias_once() -> None:
    handlers = ["directive_handlers:pool.close", "directive_handlers:same_pool.close"]
    await call(CleanupMiddleware(app, settings={"handlers": handlers}), http_scope("/"))
    assert [name for name, _ in CALLS] == ["dynamic", "pool.close"]


CONTEXTS = """
handlers = ["directive_handlers:close_pools"]

[[host]]
name = "api.example.com"
handlers = ["directive_handlers:flush_metrics", "directive_handlers:close_pools"]

[[host]]
name = "*.example.com"
handlers = ["directive_handlers:admin_audit"]

[[location]]
path = "/reports"
extensions = [".csv"]
handlers = ["directive_handlers:flush_metrics"]

[[location]]
path = "/admin/deep"
handlers = ["directive_handlers:deep_second"]

[[location]]
path = "/admin"
host = "api.example.com"
handlers = ["directive_handlers:admin_audit", "directive_handlers:admin_first"]
"""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        pytest.param("other.org", "/", ["close_pools"], id="server-wide only"),
        pytest.param(
            "API.example.com:8443",
            "/",
            ["close_pools", "flush_metrics", "admin_audit"],
            id="host, port and case ignored, wildcard too, each once",
        ),
        pytest.param(
            "a.b.example.com", "/", ["close_pools", "admin_audit"], id="wildcard subdomain"
        ),
        pytest.param("example.com", "/", ["close_pools"], id="wildcard needs a subdomain"),
        pytest.param(
            "other.org", "/reports/q3.csv", ["close_pools", "flush_metrics"], id="extension"
        ),
        pytest.param("other.org", "/reports/q3.json", ["close_pools"], id="other extension"),
        pytest.param(
            "api.example.com",
            "/admin/deep/x",
            [
                "close_pools",
                "flush_metrics",
                "admin_audit",
                "first",
                "second",
            ],
            id="broader location before narrower",
        ),
        pytest.param(
            "other.org", "/admin/deep", ["close_pools", "second"], id="location host restriction"
        ),
        pytest.param("other.org", "/administrator", ["close_pools"], id="whole segments only"),
    ],
)
async def test_directive_contexts_through_the_middleware(
    tmp_path: Path, host: str, path: str, expected: list[str]
) -> None:
    settings = tmp_path / "cleanup.toml"
    settings.write_text(CONTEXTS)
    scope = http_scope(path, headers=[(b"host", host.encode())])
    await call(CleanupMiddleware(app, settings=settings), scope)
    assert [name for name, _ in CALLS] == ["dynamic", *expected]
