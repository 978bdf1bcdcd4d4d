import functools
import logging
import threading
from typing import Any

import pytest
from raw import call, respond

from asgi_cleanup import CleanupMiddleware, CleanupRegistry
from asgi_cleanup._types import Receive, Scope, Send


def noop(*args: Any, **kwargs: Any) -> None:
    pass


def test_register_returns_the_callable() -> None:
    registry = CleanupRegistry()
    assert registry.register(noop, 1, key="v") is noop
    assert len(registry) == 1


def test_register_works_as_a_decorator() -> None:
    registry = CleanupRegistry()

    @registry.register
    def cleanup() -> None:
        pass

    assert callable(cleanup)
    assert len(registry) == 1


@pytest.mark.parametrize("value", [None, 42, "module:func", b"x"])
def test_register_of_a_non_callable_raises_type_error_naming_it(value: object) -> None:
    registry = CleanupRegistry()
    with pytest.raises(TypeError, match=repr(value).replace("'", ".")):
        registry.register(value)  # type: ignore[arg-type]
    assert len(registry) == 0


def test_unregister_removes_every_registration_compared_with_eq() -> None:
    registry = CleanupRegistry()
    registry.register(noop, 1)
    registry.register(print)
    registry.register(noop, 2)
    registry.unregister(noop)
    assert len(registry) == 1


def test_unregister_matches_equal_bound_methods() -> None:
    class Resource:
        def close(self) -> None:
            pass

    resource = Resource()
    registry = CleanupRegistry()
    registry.register(resource.close)
    registry.unregister(resource.close)  # a new, equal bound method object
    assert len(registry) == 0


def test_unregister_of_an_unknown_callable_is_not_an_error() -> None:
    registry = CleanupRegistry()
    registry.unregister(noop)
    registry.register(print)
    registry.unregister(noop)
    assert len(registry) == 1


def test_new_registry_is_open_and_has_no_outcome() -> None:
    registry = CleanupRegistry()
    assert registry.frozen is False
    assert registry.outcome is None
    assert len(registry) == 0


def test_register_from_many_threads_loses_nothing() -> None:
    registry = CleanupRegistry()

    def register_many() -> None:
        for _ in range(1000):
            registry.register(noop)

    threads = [threading.Thread(target=register_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(registry) == 8000


@pytest.mark.anyio
async def test_registry_is_frozen_with_outcome_and_empty_after_the_phase() -> None:
    seen: list[tuple[bool, int | None, int]] = []
    holder: list[CleanupRegistry] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]
        holder.append(registry)

        def cleanup() -> None:
            seen.append((registry.frozen, registry.outcome.status, len(registry)))

        registry.register(cleanup)
        registry.register(cleanup)
        for message in respond(201):
            await send(message)

    await call(CleanupMiddleware(app))
    # The second cleanup to run sees the first one already gone.
    assert seen == [(True, 201, 1), (True, 201, 0)]
    assert holder[0].frozen
    assert len(holder[0]) == 0


@pytest.mark.anyio
async def test_late_registration_is_ignored_with_a_warning_naming_the_callable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []
    holder: list[CleanupRegistry] = []

    def late_cleanup() -> None:
        ran.append("late")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        holder.append(scope["cleanup"])

        def first() -> None:
            assert holder[0].register(late_cleanup) is late_cleanup

        scope["cleanup"].register(first)
        for message in respond():
            await send(message)

    with caplog.at_level(logging.WARNING, logger="asgi_cleanup"):
        await call(CleanupMiddleware(app))
        assert holder[0].register(late_cleanup) is late_cleanup
    assert ran == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("late_cleanup" in r.getMessage() for r in warnings)


@pytest.mark.anyio
async def test_registry_is_frozen_even_when_nothing_was_registered() -> None:
    holder: list[CleanupRegistry] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        holder.append(scope["cleanup"])
        for message in respond():
            await send(message)

    await call(CleanupMiddleware(app))
    assert holder[0].frozen
    holder[0].register(noop)
    assert len(holder[0]) == 0


@pytest.mark.anyio
async def test_unregister_after_freeze_has_no_effect() -> None:
    ran: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]
        second = functools.partial(ran.append, 2)

        def first() -> None:
            registry.unregister(second)
            ran.append(1)

        registry.register(second)
        registry.register(first)
        for message in respond():
            await send(message)

    await call(CleanupMiddleware(app))
    assert ran == [1, 2]


@pytest.mark.anyio
async def test_every_request_gets_a_fresh_registry() -> None:
    registries: list[CleanupRegistry] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registries.append(scope["cleanup"])
        for message in respond():
            await send(message)

    middleware = CleanupMiddleware(app)
    await call(middleware)
    await call(middleware)
    assert len(registries) == 2
    assert registries[0] is not registries[1]
    assert all(type(r) is CleanupRegistry for r in registries)
