"""The middleware's option validators, for keyword arguments and settings files alike."""

import math
from collections.abc import Callable
from typing import Any

from ._handlers import check_callable, resolve, subject

QUEUE_OPTIONS = ("queue", "arq_redis_url", "durable_grace")  # validated by asgi_cleanup.queues
OPTION_NAMES: tuple[str, ...] = (
    "timeout",
    "shutdown_timeout",
    "thread_limit",
    "async_limit",
    "on_error",
    "on_complete",
    "telemetry",
    *QUEUE_OPTIONS,
)
HOOK_ARITY = {"on_error": 3, "on_complete": 2}  # the hooks, and the arguments each is given


def timeout_range(name: str) -> str:
    # A per-cleanup timeout of 0 would time every cleanup out before it starts; a shutdown
    # bound of 0 is a choice: do not wait for cleanups at shutdown.
    return "> 0" if name == "timeout" else ">= 0"


def validate_timeout(name: str, value: Any) -> float | None:
    """Seconds (``timeout`` > 0, others >= 0) as a ``float``; ``None`` or infinity: no limit.
    :raises TypeError: unless ``None``, ``int`` or ``float``; :raises ValueError: out of range."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if math.isnan(value) or value < 0 or (value == 0 and name == "timeout"):
        raise ValueError(f"{name} must be {timeout_range(name)} seconds or None, got {value!r}")
    return None if math.isinf(value) else float(value)


def validate_limit(name: str, value: Any) -> Any:
    """A count >= 1: ``thread_limit``, or ``async_limit``, which may also be ``None`` (no cap).
    :raises TypeError: unless an ``int`` (not a ``bool``); :raises ValueError: if below 1."""
    if value is None and name == "async_limit":
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        wanted = "an int >= 1" + (" or None" if name == "async_limit" else "")
        raise TypeError(f"{name} must be {wanted}, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return value


def validate_flag(name: str, value: Any) -> bool:
    """:raises TypeError: unless ``value`` is a ``bool``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def validate_hook(name: str, value: object) -> Callable[..., object] | None:
    """``None``, or a callable (or a reference to one, imported now) taking the hook's
    arguments: ``on_error`` ``(cleanup, exception, outcome)``, ``on_complete`` ``(reports,
    outcome)``. :raises TypeError: if it cannot; :raises ValueError: for a bad reference."""
    if value is None:
        return None
    try:
        found = resolve(value, {}) if isinstance(value, str) else value
        return check_callable(found, HOOK_ARITY[name])
    except TypeError as exc:
        raise TypeError(f"{name} {subject(value)}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{name} {subject(value)}: {exc}") from exc
