"""A Django project whose cleanups write audit rows through the ORM, served by a real server
in ``tests/django_orm``. Its database and whether the middleware applies Django's connection
rules to its worker threads come from the environment (see ``settings.py``)."""
