"""examples/recipes/django_project: Django's ASGI handler wrapped in CleanupMiddleware."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
from types import SimpleNamespace

import anyio
import pytest
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.test import override_settings
from django.urls import path
from recipe_support import Message, cleanups_run, client_for, lifespan

from asgi_cleanup import Outcome
from asgi_cleanup.django import cleanup_registry, closing_old_connections

_SETTINGS = os.environ.get("DJANGO_SETTINGS_MODULE")
from django_project.asgi import application, django_application  # noqa: E402

# The recipe's asgi.py sets DJANGO_SETTINGS_MODULE, as asgi.py files do. Django is set up now;
# the processes later tests start (a Celery worker would load Django) must not inherit it.
if _SETTINGS is None:
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    # Django's ASGIHandler is asyncio only (asgiref, asyncio.create_task and asyncio.wait).
    return "asyncio"


@pytest.fixture(autouse=True)
def _log_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


@pytest.mark.parametrize(
    ("path", "body"),
    [("/", "hello from an async view\n"), ("/sync", "hello from a sync view\n")],
)
async def test_django_recipe_views_register_cleanups_that_run_after_the_response(
    path: str, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for(application) as client:
        response = await client.get(path)

    assert response.status_code == 200
    assert response.text == body
    assert cleanups_run(caplog) == [
        ("dynamic", path, 200, None, True),
        ("directive", path, 200, None, True),
    ]


async def test_django_recipe_sees_the_500_that_django_makes_of_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Django turns the view's exception into its 500 response: the app call does not raise.
    async with client_for(application) as client:
        response = await client.get("/error")

    assert response.status_code == 500
    assert cleanups_run(caplog) == [
        ("dynamic", "/error", 500, None, True),
        ("directive", "/error", 500, None, True),
    ]


async def test_django_recipe_lifespan_is_answered_for_django_which_rejects_it() -> None:
    assert await lifespan(application) == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


# A view that sets a context variable: Django runs each view in a task of its own, but a
# cleanup runs in a copy of the context current when it was registered, so it sees the value.
REQUEST_USER = contextvars.ContextVar("REQUEST_USER", default="nobody")
seen_by_cleanup: list[tuple[str, str]] = []


async def view_setting_a_contextvar(request: HttpRequest) -> HttpResponse:
    REQUEST_USER.set("alice")

    async def cleanup(user_passed: str) -> None:
        seen_by_cleanup.append((REQUEST_USER.get(), user_passed))

    cleanup_registry(request).register(cleanup, REQUEST_USER.get())
    return HttpResponse("ok")


async def slow_view(request: HttpRequest) -> HttpResponse:
    cleanup = cleanup_registry(request)

    async def record_outcome() -> None:
        seen_outcomes.append(cleanup.outcome)

    cleanup.register(record_outcome)
    await asyncio.sleep(10)  # the client leaves first: Django cancels this view
    return HttpResponse("never sent")


seen_outcomes: list[Outcome | None] = []
thread_sensitive_ran: list[str] = []


async def view_registering_a_thread_sensitive_cleanup(request: HttpRequest) -> HttpResponse:
    # The other way the recipe compares: asgiref's thread-sensitive executor for the cleanup.
    def audit() -> None:
        thread_sensitive_ran.append(threading.current_thread().name)

    cleanup_registry(request).register(sync_to_async(audit, thread_sensitive=True))
    return HttpResponse("ok")


urlpatterns = [
    path("contextvar", view_setting_a_contextvar),
    path("slow", slow_view),
    path("thread-sensitive", view_registering_a_thread_sensitive_cleanup),
]


async def test_django_context_set_in_a_view_before_registering_reaches_the_cleanup() -> None:
    seen_by_cleanup.clear()
    with override_settings(ROOT_URLCONF=__name__):
        async with client_for(application) as client:
            response = await client.get("/contextvar")

    assert response.status_code == 200
    assert seen_by_cleanup == [("alice", "alice")]


async def test_django_helper_without_the_middleware_says_how_to_install_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with client_for(django_application) as client:  # Django's handler, unwrapped
        response = await client.get("/")

    assert response.status_code == 500
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert record.exc_info is not None
    assert "CleanupMiddleware(get_asgi_application())" in str(record.exc_info[1])


def test_django_helper_on_a_request_without_a_scope_says_it_was_not_served_over_asgi() -> None:
    wsgi_request = SimpleNamespace(method="GET", path="/")  # no .scope, as a WSGIRequest

    with pytest.raises(RuntimeError, match="not served over ASGI"):
        cleanup_registry(wsgi_request)


async def test_django_view_cancelled_by_a_client_disconnect_still_gets_its_cleanups() -> None:
    seen_outcomes.clear()
    messages = iter([{"type": "http.request", "body": b""}, {"type": "http.disconnect"}])
    sent: list[Message] = []

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/slow", "raw_path": b"/slow", "root_path": "",
             "query_string": b"", "headers": [(b"host", b"testserver")],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}  # fmt: skip
    with override_settings(ROOT_URLCONF=__name__), anyio.fail_after(5):
        await application(scope, receive, send)
        await application.drain()

    assert sent == []
    [outcome] = seen_outcomes
    assert outcome is not None
    assert (outcome.status, outcome.response_complete, outcome.client_disconnected) == (
        None,
        False,
        True,
    )


def test_django_recipe_applies_djangos_connection_rules_to_sync_cleanups() -> None:
    assert application.sync_run_context is closing_old_connections


async def test_django_thread_sensitive_cleanup_of_a_view_gets_a_new_thread_per_request() -> None:
    # Django runs each request in a ThreadSensitiveContext, gone by cleanup time; a cleanup
    # runs in a copy of the view's context, so asgiref (3.13 here) makes a new one-thread
    # executor for it: a new thread, and a new database connection, for every request.
    thread_sensitive_ran.clear()
    with override_settings(ROOT_URLCONF=__name__):
        async with client_for(application) as client:
            for _ in range(3):
                assert (await client.get("/thread-sensitive")).status_code == 200

    assert len(thread_sensitive_ran) == 3
    assert len(set(thread_sensitive_ran)) == 3, thread_sensitive_ran
    assert all(name.startswith("ThreadPoolExecutor-") for name in thread_sensitive_ran)
