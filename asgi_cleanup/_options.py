"""Validation of the middleware's options, shared by keyword arguments and settings files."""

import math
from typing import Any


def validate_timeout(name: str, value: Any) -> float | None:
    """A non-negative number of seconds, or ``None`` for no limit.

    :raises TypeError: for anything but ``None``, an ``int`` or a ``float`` (``bool`` too).
    :raises ValueError: for a negative number or NaN.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0 seconds or None, got {value!r}")
    return None if math.isinf(value) else float(value)


def validate_thread_limit(value: Any) -> int:
    """An ``int`` of at least 1.

    :raises TypeError: for anything but an ``int`` (``bool`` too).
    :raises ValueError: for a number below 1.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"thread_limit must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"thread_limit must be >= 1, got {value!r}")
    return value
