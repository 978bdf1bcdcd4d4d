import contextlib
import gc
import weakref
from collections.abc import Iterator

import pytest
from raw import call

from asgi_cleanup import CleanupMiddleware, CleanupRegistry
from asgi_cleanup._types import Receive, Scope, Send

ALIVE: list["weakref.ref[AppError]"] = []


class AppError(Exception):
    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        ALIVE.append(weakref.ref(self))


@pytest.fixture
def no_garbage_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.anyio
@pytest.mark.usefixtures("no_garbage_collector")
async def test_app_error_is_freed_without_the_garbage_collector_once_its_phase_is_over() -> None:
    # The exception's traceback holds the request's frames and scope, and so the registry:
    # were the registry still to hold the exception, only a collector could free them (and
    # granian puts objects of its own in that cycle, which no collector sees).
    ALIVE.clear()
    registries: list[CleanupRegistry] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registries.append(scope["cleanup"])
        scope["cleanup"].register(lambda: None)
        raise AppError("boom")  # no local keeps it: that cycle would be the app's own

    middleware = CleanupMiddleware(app)
    with contextlib.suppress(AppError):
        await call(middleware)
    await middleware.drain()
    assert registries[0].outcome is None  # let go of, once the phase was over
    assert ALIVE[0]() is None
