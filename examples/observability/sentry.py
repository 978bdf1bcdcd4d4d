"""Failed cleanups in Sentry: on_error sends each exception, tagged with the cleanup's name."""

from typing import Any

import sentry_sdk
from observed_app import inner_app

from asgi_cleanup import CleanupMiddleware, Outcome


def report_to_sentry(cleanup: Any, exception: BaseException, outcome: Outcome) -> None:
    name = f"{getattr(cleanup, '__module__', '?')}.{getattr(cleanup, '__qualname__', cleanup)}"
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("cleanup", name)
        scope.set_tag("http.status_code", str(outcome.status))
        sentry_sdk.capture_exception(exception)


# sentry_sdk.init(dsn=...) as usual, once, at start-up.
app = CleanupMiddleware(inner_app, on_error=report_to_sentry)
