"""Settings from the environment, set by the tests:

- ``ORM_DATABASE``: ``postgresql:HOST:PORT:NAME`` or ``sqlite3:PATH``;
- ``ORM_CONNECTION_RULES``: ``on`` (``closing_old_connections`` around each run of sync
  cleanups) or ``off`` (the leak, for comparison);
- ``ORM_THREAD_LIMIT``: the middleware's ``thread_limit``.
"""

import os

SECRET_KEY = "tests only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = "django_orm.orm_project.urls"
INSTALLED_APPS = ["django_orm.orm_project"]
MIDDLEWARE: list[str] = []
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_engine, _, _where = os.environ["ORM_DATABASE"].partition(":")
if _engine == "postgresql":
    _host, _port, _name = _where.split(":")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": _host,
            "PORT": _port,
            "NAME": _name,
            "USER": "postgres",
            "CONN_MAX_AGE": int(os.environ.get("ORM_CONN_MAX_AGE", "0")),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _where,
            "OPTIONS": {"timeout": 20},
        }
    }

CONNECTION_RULES = os.environ["ORM_CONNECTION_RULES"] == "on"
THREAD_LIMIT = int(os.environ["ORM_THREAD_LIMIT"])
