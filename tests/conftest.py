from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import pytest
from servers import SERVER_KINDS, ServerProcess


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- real servers (tests/servers.py, tests/real_servers/) --------------------------------

_SERVERS = pytest.StashKey[list[ServerProcess]]()
_MARKS = pytest.StashKey[Path]()

StartServer = Callable[..., ServerProcess]


@pytest.fixture(params=SERVER_KINDS)
def server_kind(request: pytest.FixtureRequest) -> str:
    """Which real server to run: one of ``servers.SERVER_KINDS``."""
    kind: str = request.param
    return kind


@pytest.fixture
def marks_path(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The file the cleanups of ``server_apps`` append their JSON marks to."""
    path = tmp_path / "marks.jsonl"
    request.node.stash[_MARKS] = path
    return path


@pytest.fixture
def start_server(
    server_kind: str, tmp_path: Path, marks_path: Path, request: pytest.FixtureRequest
) -> Generator[StartServer, None, None]:
    """Start a server of ``server_kind``; every server started is stopped at teardown.

    ``start_server(graceful_timeout=None, workers=None, app="server_apps:app",
    extra_args=(), env={})`` returns a ready :class:`ServerProcess`. Its log goes to
    ``tmp_path`` and is attached to the report of a failed test.
    """
    started: list[ServerProcess] = []
    request.node.stash[_SERVERS] = started

    def start(
        *,
        graceful_timeout: float | None = None,
        workers: int | None = None,
        app: str = "server_apps:app",
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> ServerProcess:
        server = ServerProcess(
            kind=server_kind,
            log_path=tmp_path / f"server-{len(started)}.log",
            app=app,
            env={"ASGI_CLEANUP_MARKS": str(marks_path), **(env or {})},
            graceful_timeout=graceful_timeout,
            workers=workers,
            extra_args=extra_args,
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    """A running server of ``server_kind`` serving ``server_apps:app`` with default options."""
    return start_server()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the logs of the test's servers and its cleanup marks to a failed test's report."""
    report = yield
    if report.failed:
        for server in item.stash.get(_SERVERS, []):
            report.sections.append((f"server log: {server.name}", server.log_text()))
        marks = item.stash.get(_MARKS, None)
        if marks is not None and marks.exists():
            report.sections.append(("cleanup marks", marks.read_text(encoding="utf-8")))
    return report
