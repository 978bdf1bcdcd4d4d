"""Directive cleanups for the middleware tests; each records its name and the Outcome."""

from typing import Any

CALLS: list[tuple[str, Any]] = []


def close_pools(outcome: Any) -> None:
    CALLS.append(("close_pools", outcome))


async def flush_metrics(outcome: Any) -> None:
    CALLS.append(("flush_metrics", outcome))


def admin_audit(outcome: Any) -> None:
    CALLS.append(("admin_audit", outcome))


def report_error(cleanup: Any, exception: BaseException, outcome: Any) -> None:
    CALLS.append(("report_error", exception))


def failing(outcome: Any) -> None:
    raise RuntimeError("directive failed")


def admin_first(outcome: Any) -> None:
    CALLS.append(("first", outcome))


async def deep_second(outcome: Any) -> None:
    CALLS.append(("second", outcome))


def record_reports(reports: Any, outcome: Any) -> None:
    CALLS.append(("reports", reports))


async def stuck_directive(outcome: Any) -> None:
    import anyio

    await anyio.sleep(10)


class Pool:
    """A handler reached as a bound method (``pool.close``) or a classmethod (``Pool.drain``):
    every attribute lookup makes a fresh method object."""

    def close(self, outcome: Any) -> None:
        CALLS.append(("pool.close", outcome))

    @classmethod
    def drain(cls, outcome: Any) -> None:
        CALLS.append(("Pool.drain", outcome))


pool = Pool()
same_pool = pool
