"""``sync_run_context``: a context manager entered in the worker thread around each run of
consecutive sync cleanups (what ``asgi_cleanup.django.closing_old_connections`` uses)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from raw import app_registering, call

from asgi_cleanup import CleanupMiddleware

pytestmark = pytest.mark.anyio


class Recording:
    """A ``sync_run_context`` that records what happens, and in which thread."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        self.events.append(("enter", threading.get_ident()))
        try:
            yield
        finally:
            self.events.append(("exit", threading.get_ident()))

    def cleanup(self, name: str) -> Any:
        def cleanup() -> None:
            self.events.append((name, threading.get_ident()))

        return cleanup


async def test_sync_run_context_wraps_each_run_of_sync_cleanups_once_in_its_thread() -> None:
    recording = Recording()
    first, second = recording.cleanup("first"), recording.cleanup("second")

    async def between() -> None:
        recording.events.append(("async", threading.get_ident()))

    # Run order (last registered first): second, first, then the async one, then third.
    app = app_registering(recording.cleanup("third"), between, first, second)
    await call(CleanupMiddleware(app, sync_run_context=recording))

    names = [name for name, _ in recording.events]
    assert names == ["enter", "second", "first", "exit", "async", "enter", "third", "exit"]
    loop_thread = threading.get_ident()
    first_run, second_run = recording.events[:4], recording.events[5:]
    assert len({ident for _, ident in first_run}) == 1
    assert len({ident for _, ident in second_run}) == 1
    assert all(ident != loop_thread for _, ident in first_run + second_run)


async def test_sync_run_context_is_not_entered_for_async_cleanups_alone() -> None:
    recording = Recording()

    async def only_async() -> None:
        recording.events.append(("async", 0))

    await call(CleanupMiddleware(app_registering(only_async), sync_run_context=recording))
    assert recording.events == [("async", 0)]


async def test_sync_run_context_sees_the_run_end_when_a_cleanup_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recording = Recording()

    def fails() -> None:
        raise ValueError("cleanup failed")

    await call(CleanupMiddleware(app_registering(fails), sync_run_context=recording))
    assert [name for name, _ in recording.events] == ["enter", "exit"]
    assert "Cleanup" in caplog.text
    assert "cleanup failed" in caplog.text


@pytest.mark.parametrize("where", ["entering", "leaving"])
async def test_sync_run_context_that_fails_is_logged_and_the_cleanups_still_run_once(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    @contextlib.contextmanager
    def failing() -> Iterator[None]:
        if where == "entering":
            raise RuntimeError("no database")
        yield
        raise RuntimeError("could not close")

    app = app_registering(lambda: ran.append("b"), lambda: ran.append("a"))
    await call(CleanupMiddleware(app, sync_run_context=failing))

    assert ran == ["a", "b"]
    [record] = [r for r in caplog.records if r.name == "asgi_cleanup"]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("sync_run_context ")
    assert f"failed {where} a run of sync cleanups for GET /" in record.getMessage()
    assert record.exc_info is not None


@pytest.mark.parametrize("value", ["pkg.mod:factory", 42, contextlib.nullcontext()])
def test_sync_run_context_that_is_not_callable_is_a_type_error_at_construction(
    value: Any,
) -> None:
    with pytest.raises(TypeError, match="sync_run_context must be callable or None"):
        CleanupMiddleware(app_registering(), sync_run_context=value)


def test_sync_run_context_is_keyword_only_and_not_a_settings_key() -> None:
    from asgi_cleanup import SettingsError

    with pytest.raises(TypeError):
        CleanupMiddleware(app_registering(), None, 5.0)  # type: ignore[misc]
    with pytest.raises(SettingsError, match="sync_run_context"):
        CleanupMiddleware(
            app_registering(), settings={"sync_run_context": "contextlib:nullcontext"}
        )
