"""The pytest plugin (entry point ``pytest11``), loaded by pytest only.

Loaded but not asked for, it does nothing. A test opts in with the ``asgi_cleanups`` fixture
or the ``asgi_cleanup_strict`` marker, or every test does with the ini option
``asgi_cleanup_strict = true``. An opted-in test fails if a cleanup failure (or timeout, or a
failed hook) is logged on the ``asgi_cleanup`` logger during it, unless
``@pytest.mark.asgi_cleanup_allow_failures`` allows it.
"""

import re
from collections.abc import Generator

import pytest

from ._recorder import CleanupFailure, CleanupRecorder

STRICT = "asgi_cleanup_strict"
ALLOW = "asgi_cleanup_allow_failures"

_RECORDER = pytest.StashKey[CleanupRecorder]()
_CHECKED = pytest.StashKey[int]()  # how many failures were checked already


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        STRICT,
        type="bool",
        default=False,
        help="asgi-cleanup: fail every test during which a cleanup failure is logged",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{STRICT}: fail the test if a cleanup failure is logged during it"
    )
    config.addinivalue_line(
        "markers",
        f"{ALLOW}(*patterns): cleanup failures whose message matches a pattern (re.search),"
        " or any without patterns, do not fail the test",
    )


@pytest.fixture
def asgi_cleanups(request: pytest.FixtureRequest) -> CleanupRecorder:
    """A :class:`~asgi_cleanup.testing.CleanupRecorder`, open for the test, which it opts in:
    ``watch(app)`` an app, ``await drain()`` or ``drain_client(client)``, then read
    ``requests`` and ``failures``."""
    return _open(request.node)


def _open(item: pytest.Item) -> CleanupRecorder:
    recorder = item.stash.get(_RECORDER, None)
    if recorder is None:
        recorder = item.stash[_RECORDER] = CleanupRecorder()
        item.stash[_CHECKED] = 0
        recorder.open()
    return recorder


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    if item.get_closest_marker(STRICT) is not None or item.config.getini(STRICT):
        _open(item)  # before the fixtures: a fixture's requests count too
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    try:
        result = yield
    except BaseException:
        _check(item, "call", failed=True)
        raise
    _check(item, "call", failed=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    # After the fixtures' teardown: a client closed there drains its app's cleanups.
    try:
        result = yield
    except BaseException:
        _close(item)
        _check(item, "teardown", failed=True)
        raise
    _close(item)
    _check(item, "teardown", failed=False)
    return result


def _close(item: pytest.Item) -> None:
    recorder = item.stash.get(_RECORDER, None)
    if recorder is not None:
        recorder.close()


def _check(item: pytest.Item, when: str, failed: bool) -> None:
    """Fail the test (or, if it failed already, add a report section) for each failure logged
    since the last check that no marker allows."""
    recorder = item.stash.get(_RECORDER, None)
    if recorder is None:
        return
    new = recorder.failures[item.stash[_CHECKED] :]
    item.stash[_CHECKED] = len(recorder.failures)
    failures = [failure for failure in new if not _allowed(item, failure)]
    if not failures:
        return
    text = "\n".join(map(str, failures))
    if failed:
        item.add_report_section(when, "asgi_cleanup failures", text)
        return
    count = f"{len(failures)} cleanup failure{'s' if len(failures) > 1 else ''}"
    pytest.fail(
        f"{count} logged on 'asgi_cleanup' (allow expected ones with "
        f"@pytest.mark.{ALLOW}(pattern)):\n{text}",
        pytrace=False,
    )


def _allowed(item: pytest.Item, failure: CleanupFailure) -> bool:
    for marker in item.iter_markers(ALLOW):
        if not marker.args or any(re.search(p, failure.message) for p in marker.args):
            return True
    return False
