"""Directive cleanups named in cleanup.toml, shared by every recipe app in this directory.

A directive cleanup receives the request's ``Outcome`` and runs after the cleanups that the
request registered itself.
"""

import logging

from asgi_cleanup import Outcome

log = logging.getLogger(__name__)


def log_request(outcome: Outcome) -> None:
    """Log how every request ended (a sync cleanup: it runs in a worker thread)."""
    scope = outcome.scope
    log.info(
        "directive cleanup: %s %s ended with status %s, exception %r, %s, %s, in %.1f ms",
        scope.get("method", "WEBSOCKET"),
        scope["path"],
        outcome.status,
        outcome.exception,
        "response complete" if outcome.response_complete else "response incomplete",
        "client left early" if outcome.client_disconnected else "client stayed",
        outcome.duration * 1e3,
        extra={"outcome": outcome},
    )
