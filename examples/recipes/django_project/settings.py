"""Minimal Django settings for the Django recipe: no database, no apps, two views."""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "recipe-only: set a real secret in production"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "django_project.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
USE_TZ = True

# Read by asgi.py: directive cleanups and options for CleanupMiddleware.
ASGI_CLEANUP_SETTINGS = BASE_DIR / "cleanup.toml"
