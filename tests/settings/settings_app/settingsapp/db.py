"""Directive cleanups of several shapes, referenced as ``settingsapp.db:...``."""

from typing import Any

POOL_SIZE = 5


def close_pools(outcome: Any) -> None:
    pass


async def flush(outcome: Any) -> None:
    pass


def cleanuphandler(outcome: Any) -> None:
    pass


def with_default(outcome: Any, retries: int = 3) -> None:
    pass


def star_args(*args: Any) -> None:
    pass


def no_args() -> None:
    pass


def two_args(outcome: Any, extra: Any) -> None:
    pass


def keyword_only(outcome: Any, *, required: Any) -> None:
    pass


def report_failure(cleanup: Any, exception: BaseException, outcome: Any) -> None:
    pass


class Pool:
    def close(self, outcome: Any) -> None:
        pass


pool = Pool()
