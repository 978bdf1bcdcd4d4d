"""The five instruments, read back through the SDK's in-memory reader, on asyncio and trio."""

import subprocess
import sys
import textwrap
from typing import Any

import anyio
import pytest
from otel_support import Otel, call, respond

from asgi_cleanup import CleanupMiddleware

pytestmark = pytest.mark.anyio

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


async def quick() -> None:
    pass


def quick_in_a_thread() -> None:
    pass


async def failing() -> None:
    raise KeyError("gone")


def app_registering(*cleanups: Any) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        for cleanup in cleanups:
            scope["cleanup"].register(cleanup)
        await respond(send)

    return app


async def test_the_duration_histogram_counts_every_cleanup_run_by_name_source_and_error_type() -> (
    None
):
    otel = Otel()
    middleware = otel.middleware(app_registering(quick, quick_in_a_thread, failing, quick))
    for _ in range(3):
        await call(middleware)
    metric = otel.metric("asgi_cleanup.cleanup.duration")
    assert metric.unit == "s"
    counts = {
        tuple(sorted(p.attributes.items())): (p.count, tuple(p.explicit_bounds))
        for p in metric.data.data_points
    }
    name = "asgi_cleanup.cleanup.name"
    source = ("asgi_cleanup.cleanup.source", "registered")
    assert counts == {
        ((name, f"{__name__}.quick"), source): (6, BUCKETS),
        ((name, f"{__name__}.quick_in_a_thread"), source): (3, BUCKETS),
        ((name, f"{__name__}.failing"), source, ("error.type", "KeyError")): (3, BUCKETS),
    }


async def test_active_phases_go_back_to_zero_after_drain_and_each_phase_has_one_delay() -> None:
    otel = Otel()
    running = anyio.Event()

    async def slow() -> None:
        running.set()
        await anyio.sleep(0.05)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["cleanup"].register(slow)
        scope["cleanup"].register(quick)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        # Unfinished response: the phase runs in a task of its own.

    middleware = otel.middleware(app)
    await call(middleware)
    await call(middleware)
    await running.wait()
    [active] = otel.points("asgi_cleanup.phase.active")
    assert active.value >= 1
    await middleware.drain()
    [active] = otel.points("asgi_cleanup.phase.active")
    assert active.value == 0
    assert otel.metric("asgi_cleanup.phase.active").unit == "{phase}"
    [delay] = otel.points("asgi_cleanup.phase.delay")
    assert delay.count == 2
    assert otel.metric("asgi_cleanup.phase.delay").unit == "s"


async def test_a_cleanup_that_does_not_stop_at_its_timeout_is_counted_left_behind_once() -> None:
    otel = Otel()

    async def stubborn() -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.3)

    middleware = otel.middleware(app_registering(stubborn), timeout=0.05)
    await call(middleware)
    await middleware.drain()
    [left] = otel.points("asgi_cleanup.cleanup.left_behind")
    assert left.value == 1
    assert left.attributes["asgi_cleanup.cleanup.name"] == f"{__name__}.{stubborn.__qualname__}"
    [duration] = otel.points("asgi_cleanup.cleanup.duration")
    assert duration.attributes["error.type"] == "timeout"
    assert duration.sum == pytest.approx(0.05)


async def test_phases_still_running_when_the_shutdown_bound_ends_are_counted() -> None:
    otel = Otel()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        scope["cleanup"].register(anyio.sleep, 0.5)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    middleware = otel.middleware(app, shutdown_timeout=0.05)
    await call(middleware)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        pass

    await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    [unfinished] = otel.points("asgi_cleanup.shutdown.unfinished")
    assert unfinished.value == 1
    await middleware.drain()


def test_with_telemetry_off_nothing_is_emitted_even_with_global_providers_set() -> None:
    # The global providers can be set once per process: a process of its own.
    script = textwrap.dedent(
        """
        import sys, anyio
        sys.path.insert(0, sys.argv[1])
        from opentelemetry import metrics, trace
        from otel_support import Otel, call, respond
        from asgi_cleanup import CleanupMiddleware

        otel = Otel()
        trace.set_tracer_provider(otel.tracer_provider)
        metrics.set_meter_provider(otel.meter_provider)

        async def failing():
            raise ValueError("x")

        async def app(scope, receive, send):
            scope["cleanup"].register(failing)
            await respond(send)

        async def main(app):
            await call(app)
            await app.drain()

        anyio.run(main, CleanupMiddleware(app))
        assert "asgi_cleanup.otel.tracing" not in sys.modules
        assert otel.spans() == [] and otel.points("asgi_cleanup.cleanup.duration") == []
        anyio.run(main, CleanupMiddleware(app, telemetry=True))  # the global providers
        assert len(otel.spans()) == 1 and otel.points("asgi_cleanup.cleanup.duration")
        print("ok")
        """
    )
    here = str(__import__("pathlib").Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", script, here], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_telemetry_without_the_opentelemetry_api_is_an_import_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "asgi_cleanup.otel.tracing", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'asgi-cleanup\[otel\]'"):
        CleanupMiddleware(app_registering(), telemetry=True)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"telemetry": "yes"}, TypeError),
        ({"telemetry": None}, TypeError),
        ({"tracer_provider": object()}, ValueError),
    ],
)
def test_bad_telemetry_options_fail_at_construction(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error, match=r"telemetry|tracer_provider"):
        CleanupMiddleware(app_registering(), **options)


def test_telemetry_is_a_settings_key() -> None:
    assert CleanupMiddleware(app_registering(), settings={"telemetry": True}).telemetry is True
    assert CleanupMiddleware(app_registering(), settings={"telemetry": False}).telemetry is False
