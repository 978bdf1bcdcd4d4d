"""Directive cleanups for the demo, named in examples/cleanup.toml.

Each receives the request's Outcome and runs after the endpoint's own (dynamic) cleanups.
"""

import logging

from asgi_cleanup import Outcome

log = logging.getLogger("demo")


def log_request(outcome: Outcome) -> None:
    scope = outcome.scope
    log.info(
        "directive (server-wide): %s %s ended with status %s, exception %r",
        scope["method"],
        scope["path"],
        outcome.status,
        outcome.exception,
    )


async def admin_audit(outcome: Outcome) -> None:
    log.info("directive ([[location]] /admin): audit entry for %s", outcome.scope["path"])
