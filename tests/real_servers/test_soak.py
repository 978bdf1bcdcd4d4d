"""The soak tool (``python -m benchmarks.soak``, ``docs/reliability.md``) on a small run, so that
it keeps working: its whole mix against two real servers, and every check it makes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from servers import REPO_ROOT

pytestmark = pytest.mark.real_server

REQUESTS = 300
WARMUP = 300


def test_soak_tool_small_run_passes_every_check() -> None:
    cmd = [sys.executable, "-m", "benchmarks.soak", "--server", "uvicorn", "--server", "daphne"]
    cmd += ["--requests", str(REQUESTS), "--warmup", str(WARMUP)]
    done = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=50, check=False
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| uvicorn", "| daphne"))]
    assert len(rows) == 2, report
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == str(REQUESTS), row
        assert int(cells[4]) > REQUESTS, f"too few cleanups registered: {row}"
        assert cells[5:9] == ["0", "0", "0", "0"], (
            f"lost, duplicated, error text, unexpected: {row}"
        )
        assert cells[-1] == "pass", row
