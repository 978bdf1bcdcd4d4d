"""The real-server fixtures start servers with default signal dispositions, whatever the test
process ignores: a suite started with SIGINT ignored (``make test &`` from a script) must still
stop its servers with SIGINT.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import ServerProcess

pytestmark = pytest.mark.real_server


def ignored_signals(pid: int) -> set[int]:
    """The signals process ``pid`` ignores, from the ``SigIgn`` mask of ``/proc/PID/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return {sig for sig in range(1, 65) if mask & (1 << (sig - 1))}
    raise AssertionError(f"no SigIgn line for pid {pid}")


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_ignored")
@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
def test_server_started_while_sigint_is_ignored_still_stops_on_sigint(
    kind: str, tmp_path: Path
) -> None:
    # daphne (Twisted) installs no SIGINT handler when it starts with SIGINT ignored.
    assert signal.SIGINT in ignored_signals(os.getpid())
    server = ServerProcess(kind=kind, log_path=tmp_path / "server.log")
    try:
        server.start()
        assert signal.SIGINT not in ignored_signals(server.pid)
        assert server.shutdown(signal.SIGINT, timeout=7.0) in (0, -signal.SIGINT)
    finally:
        server.stop()
