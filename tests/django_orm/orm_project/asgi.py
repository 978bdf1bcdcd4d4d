"""Django's handler in CleanupMiddleware, as docs/recipes/django.md says, with
``closing_old_connections`` or without it (``ORM_CONNECTION_RULES``). Outside the middleware,
``/health`` answers the test's readiness probe and ``/drained`` answers once every cleanup has
run (``drain()``)."""

import os
from typing import Any

from django.conf import settings
from django.core.asgi import get_asgi_application

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup.django import closing_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_orm.orm_project.settings")

django_application = get_asgi_application()
cleanups = CleanupMiddleware(
    django_application,
    thread_limit=settings.THREAD_LIMIT,
    sync_run_context=closing_old_connections if settings.CONNECTION_RULES else None,
)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] in ("/health", "/drained"):
        if scope["path"] == "/drained":
            await cleanups.drain()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await cleanups(scope, receive, send)
