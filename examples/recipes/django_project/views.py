"""Views of the Django recipe: an async view, a sync view (Django runs it in a worker thread),
and a view that raises."""

import logging

from django.http import HttpRequest, HttpResponse

from asgi_cleanup import CleanupRegistry
from asgi_cleanup.django import cleanup_registry

log = logging.getLogger(__name__)


def close_session(name: str, cleanup: CleanupRegistry) -> None:
    # A sync cleanup: it runs in one of the middleware's worker threads, after the response.
    outcome = cleanup.outcome
    assert outcome is not None
    log.info(
        "dynamic cleanup: closed session %r; status %s, exception %r",
        name,
        outcome.status,
        outcome.exception,
        extra={"outcome": outcome},
    )


async def home(request: HttpRequest) -> HttpResponse:
    cleanup = cleanup_registry(request)
    cleanup.register(close_session, "django async view", cleanup)
    return HttpResponse("hello from an async view\n", content_type="text/plain")


def sync_home(request: HttpRequest) -> HttpResponse:
    # Django runs a sync view in a worker thread; register() is safe to call there.
    cleanup = cleanup_registry(request)
    cleanup.register(close_session, "django sync view", cleanup)
    return HttpResponse("hello from a sync view\n", content_type="text/plain")


async def error(request: HttpRequest) -> HttpResponse:
    cleanup = cleanup_registry(request)
    cleanup.register(close_session, "django error view", cleanup)
    raise RuntimeError("the view failed")
