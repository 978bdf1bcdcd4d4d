import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_benchmark_command_runs_and_reports_every_target() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    for backend in ("## asyncio", "## trio"):
        assert backend in result.stdout
    lines = result.stdout.splitlines()
    for scenario in ("nothing registered", "1 async cleanup", "1 sync cleanup"):
        # In both tables (ratios to bare, and to the anchor), for both backends.
        assert sum(line.startswith(f"| {scenario} |") for line in lines) == 4
