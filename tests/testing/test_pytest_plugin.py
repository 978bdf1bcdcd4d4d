"""The pytest plugin, run on small test suites with ``pytester``: inert unless asked, then
failing tests whose cleanups failed, naming them with their tracebacks."""

import logging

import pytest

pytest_plugins = ["pytester"]

APP = """
import anyio
import httpx
from asgi_cleanup import CleanupMiddleware

async def quick():
    await anyio.sleep(0)

def broken():
    raise ValueError("lost the connection")

async def inner(scope, receive, send):
    if scope["type"] != "http":
        return
    scope["cleanup"].register(broken if scope["path"] == "/broken" else quick)
    if scope["path"] == "/raise":
        raise RuntimeError("the app broke")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

app = CleanupMiddleware(inner)

async def get(path, raise_app_exceptions=True):
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)
"""

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


@pytest.fixture
def suite(pytester: pytest.Pytester, backend: str) -> pytest.Pytester:
    """A test directory with ``cleanup_app.py`` and its async tests on ``backend``."""
    pytester.makepyfile(cleanup_app=APP)
    pytester.makeconftest(
        f"""
        import pytest

        @pytest.fixture
        def anyio_backend():
            return {backend!r}
        """
    )
    return pytester


def run(suite: pytest.Pytester, tests: str, **outcomes: int) -> pytest.RunResult:
    """Run the test module ``tests`` in ``suite``; its outcomes must be ``outcomes``."""
    suite.makepyfile(tests)
    result = suite.runpytest()
    result.assert_outcomes(**outcomes)
    return result


@BACKENDS
def test_loaded_but_not_asked_it_changes_nothing(suite: pytest.Pytester) -> None:
    run(
        suite,
        """
        import logging
        import pytest
        from cleanup_app import app, get

        LOGGER = logging.getLogger("asgi_cleanup")
        BEFORE = (list(LOGGER.handlers), LOGGER.level, LOGGER.propagate)

        @pytest.mark.anyio
        async def test_a_failing_cleanup_is_only_logged(caplog, request):
            assert not [name for name in request.fixturenames if "asgi_cleanup" in name]
            assert (list(LOGGER.handlers), LOGGER.level, LOGGER.propagate) == BEFORE
            assert (await get("/broken")).text == "ok"
            assert "Cleanup cleanup_app.broken failed" in caplog.text
            assert app.on_complete is None
        """,
        passed=1,
    )


@BACKENDS
def test_the_fixture_fails_a_test_naming_the_cleanup_with_its_traceback(
    suite: pytest.Pytester,
) -> None:
    result = run(
        suite,
        """
        import pytest
        from cleanup_app import get

        @pytest.mark.anyio
        async def test_broken(asgi_cleanups):
            assert (await get("/broken")).text == "ok"

        @pytest.mark.anyio
        async def test_failing_anyway(asgi_cleanups):
            await get("/broken")
            assert False, "the test's own failure"
        """,
        failed=2,
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_broken *",
            "*1 cleanup failure logged on 'asgi_cleanup'*asgi_cleanup_allow_failures*",
            "ERROR asgi_cleanup: Cleanup cleanup_app.broken failed for GET /broken",
            "Traceback (most recent call last):",
            '*raise ValueError("lost the connection")',
            "ValueError: lost the connection",
            # A test that failed anyway keeps its own failure, with the cleanup's beside it.
            "*_ test_failing_anyway *",
            "*the test's own failure*",
            "*Captured asgi_cleanup failures call*",
            "ERROR asgi_cleanup: Cleanup cleanup_app.broken failed for GET /broken",
        ]
    )


@BACKENDS
def test_the_marker_and_the_ini_option_opt_in_without_the_fixture(
    suite: pytest.Pytester,
) -> None:
    run(
        suite,
        """
        import pytest
        from cleanup_app import get

        @pytest.mark.anyio
        @pytest.mark.asgi_cleanup_strict
        async def test_marked():
            await get("/broken")

        @pytest.mark.anyio
        async def test_unmarked():
            await get("/broken")

        @pytest.mark.anyio
        async def test_fine():
            await get("/")
        """,
        passed=2,
        failed=1,
    )
    suite.makeini("[pytest]\nasgi_cleanup_strict = true\n")
    suite.runpytest().assert_outcomes(passed=1, failed=2)


@BACKENDS
def test_an_allowed_failure_passes_and_stays_visible(suite: pytest.Pytester) -> None:
    result = run(
        suite,
        """
        import pytest
        from cleanup_app import get

        @pytest.mark.anyio
        @pytest.mark.asgi_cleanup_allow_failures(r"\\.broken failed")
        async def test_allowed_by_pattern(asgi_cleanups):
            await get("/broken")
            [failure] = asgi_cleanups.failures
            assert isinstance(failure.exception, ValueError)

        @pytest.mark.anyio
        @pytest.mark.asgi_cleanup_allow_failures
        async def test_allowed_all(asgi_cleanups):
            await get("/broken")

        @pytest.mark.anyio
        @pytest.mark.asgi_cleanup_allow_failures("quick")
        async def test_other_pattern(asgi_cleanups):
            await get("/broken")
        """,
        passed=2,
        failed=1,
    )
    result.stdout.fnmatch_lines(["FAILED test_an_allowed_failure_passes*::test_other_pattern*"])


@BACKENDS
def test_a_failure_after_the_call_is_a_teardown_error(suite: pytest.Pytester) -> None:
    # The app raised: its cleanups run in a task of their own, drained by the fixture's exit.
    result = run(
        suite,
        """
        import pytest
        from asgi_cleanup.testing import drain
        from cleanup_app import app, get
        import cleanup_app

        @pytest.fixture
        async def served(anyio_backend):
            cleanup_app.quick = cleanup_app.broken
            yield
            await drain(app)

        @pytest.mark.anyio
        async def test_raise(served, asgi_cleanups):
            assert (await get("/raise", raise_app_exceptions=False)).status_code == 500
        """,
        passed=1,
        errors=1,
    )
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_raise*", "*Cleanup cleanup_app.broken failed for GET /raise"]
    )


@BACKENDS
def test_watched_requests_are_reported_and_the_hook_is_given_back(
    suite: pytest.Pytester,
) -> None:
    run(
        suite,
        """
        import pytest
        from cleanup_app import app, get

        @pytest.mark.anyio
        async def test_watched(asgi_cleanups):
            asgi_cleanups.watch(app)
            await get("/")
            await get("/raise", raise_app_exceptions=False)
            await asgi_cleanups.drain()
            assert [r.outcome.scope["path"] for r in asgi_cleanups.requests] == ["/", "/raise"]
            assert [r.names for r in asgi_cleanups.requests] == [["cleanup_app.quick"]] * 2
            assert app.on_complete is not None

        def test_after():
            assert app.on_complete is None
        """,
        passed=2,
    )


def test_the_plugin_is_registered_through_its_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.asgi_cleanup_strict:*", "@pytest.mark.asgi_cleanup_allow_failures*"]
    )
    assert logging.getLogger("asgi_cleanup").handlers == []
