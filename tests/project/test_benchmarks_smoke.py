"""``python -m benchmarks --quick``: every part runs and prints its tables (no thresholds)."""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.served import TARGETS as SERVED_TARGETS

pytestmark = pytest.mark.real_server  # the served part starts uvicorn and hypercorn

ROOT = Path(__file__).resolve().parents[2]


def run_quick(*args: str, timeout: float) -> str:
    """The output of ``python -m benchmarks --quick ARGS``, which must exit with 0."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def sections(output: str) -> dict[str, list[str]]:
    """The lines under each top-level heading ("# Served, ..."), by the heading's first word."""
    found: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in output.splitlines():
        if line.startswith("# "):
            lines = found.setdefault(line[2:].split(",")[0], [])
        else:
            lines.append(line)
    return found


def rows(lines: list[str], *cells: str) -> int:
    """How many table rows start with these cells."""
    start = "| " + " | ".join(cells) + " |"
    return sum(line.startswith(start) for line in lines)


# Installing wrk (apt-get, as root, when it is missing) can take a few minutes.
@pytest.mark.timeout(600)
def test_benchmark_command_runs_every_part_and_reports_every_target(tmp_path: Path) -> None:
    chart = tmp_path / "chart.png"
    output = run_quick("--chart", str(chart), timeout=570)
    parts = sections(output)
    counted = "Instructions per request (callgrind)"
    assert set(parts) == {"In-process", counted, "Served", "Memory"}

    if not any(line.startswith("skipped: valgrind is not installed") for line in parts[counted]):
        for scenario in ("bare", "nothing registered"):
            assert rows(parts[counted], scenario) == 1

    inprocess = parts["In-process"]
    for backend in ("## asyncio", "## trio"):
        assert backend in inprocess
    for scenario in ("nothing registered", "1 async cleanup", "1 sync cleanup"):
        # In both tables (ratios to bare, and to the anchor), for both backends.
        assert rows(inprocess, scenario) == 4

    served = parts["Served"]
    assert any(line.startswith("load generator: ") for line in served)
    for server in ("## uvicorn", "## hypercorn"):
        assert server in served
    for scenario, anchor, _ in SERVED_TARGETS:  # the bars of this Python (SPEC 5)
        assert rows(served, scenario, anchor) == 2
    for app in ("bare", "BackgroundTask, 1 async"):
        assert rows(served, app) == 2  # its requests per second, on each server

    memory = parts["Memory"]
    for backend in ("## memory, asyncio", "## memory, trio"):
        assert backend in memory
    for scenario in (
        "nothing registered",
        "1 async cleanup",
        "1 sync cleanup",
        "10 async cleanups",
    ):
        assert rows(memory, scenario) == 2

    if "chart: skipped, matplotlib is not installed" not in output:
        assert f"chart: {chart}" in output
        assert chart.read_bytes().startswith(b"\x89PNG")


@pytest.mark.timeout(120)
def test_python_load_generator_counts_the_responses_of_a_served_run() -> None:
    output = run_quick(
        "--part", "served", "--server", "uvicorn", "--load-tool", "python", timeout=100
    )
    assert "load generator: Python fallback" in output
    served = sections(output)["Served"]
    header = next(i for i, line in enumerate(served) if line.startswith("| app |"))
    apps = []
    for row in served[header + 2 : header + 6]:
        app, rate, _spread, _per_cpu, errors = (cell.strip() for cell in row.strip("|").split("|"))
        apps.append(app)
        assert float(rate) > 0, row
        assert int(errors) == 0, row
    assert apps == [
        "bare",
        "send-watching middleware",
        "1 async cleanup",
        "BackgroundTask, 1 async",
    ]


def test_callgrind_counts_are_parsed_and_compared_per_request() -> None:
    from benchmarks.instructions import Counts, tables

    # What callgrind prints at its end with --cache-sim=yes --branch-sim=yes.
    small = Counts.parse("==1== Collected : 1000 9 9 10 20 30 1 2 3 9 40 9 50\n")
    large = Counts.parse("==1== Collected : 3000 9 9 30 40 50 1 2 3 9 60 9 70\n")
    assert small == Counts(1000, 60, 6, 90)
    each = small.per_request(large, 10)
    assert each == Counts(200, 6, 0, 4)
    assert each.cycles == 200 + 10 * 6 + 10 * 4
    lines = tables(
        {"bare": each, "nothing registered": Counts(210, 6, 0, 4)},
        [("nothing registered", "bare", 1.03), ("absent", "bare", 1.0)],
    )
    assert "| nothing registered | bare | 1.050 | 1.033 | ≤ 1.03 | no |" in lines
    assert not any("absent" in line for line in lines)
