"""ASGI entry point of the Django recipe: Django's handler wrapped in CleanupMiddleware.

    uvicorn django_project.asgi:application --app-dir examples/recipes
    daphne django_project.asgi:application      (from examples/recipes)

docs/recipes/django.md walks through it.
"""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup.django import closing_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")

# get_asgi_application() sets Django up (settings, apps) before the middleware reads its own
# settings file, so the handlers named there may import Django models.
django_application = get_asgi_application()
# Sync cleanups run in the middleware's worker threads, where Django does not close database
# connections: closing_old_connections applies its rules there, before and after each run.
application = CleanupMiddleware(
    django_application,
    settings=settings.ASGI_CLEANUP_SETTINGS,
    sync_run_context=closing_old_connections,
)
