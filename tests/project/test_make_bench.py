"""``make bench`` says before it installs a system package (wrk), and installs none when told
not to (``tools/bench-load-tool.sh`` picks the load tool for ``python -m benchmarks``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "bench-load-tool.sh"


def fake_path(tmp_path: Path, *, uid: int, apt_get: bool) -> str:
    """A PATH with no wrk, an ``id`` that answers ``uid`` and maybe an ``apt-get`` that fails."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = {"id": f"echo {uid}"}
    if apt_get:
        tools["apt-get"] = "echo 'not to be run' >&2; exit 99"
    for name, body in tools.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def load_tool(tmp_path: Path, *args: str, uid: int, apt_get: bool) -> tuple[str, str]:
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run(
        [bash, str(SCRIPT), *args],
        env={"PATH": fake_path(tmp_path, uid=uid, apt_get=apt_get)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip(), result.stderr


def test_bench_as_root_without_wrk_says_it_will_install_wrk_with_apt_get(tmp_path: Path) -> None:
    tool, said = load_tool(tmp_path, "auto", uid=0, apt_get=True)

    assert tool == "auto"  # python -m benchmarks then installs wrk, and says so again
    assert "will install Debian's wrk package" in said
    assert "apt-get install wrk" in said
    assert "LOAD_TOOL=python make bench installs nothing" in said


def test_bench_with_load_tool_python_installs_nothing_and_says_nothing(tmp_path: Path) -> None:
    tool, said = load_tool(tmp_path, "python", uid=0, apt_get=True)

    assert tool == "python"
    assert said == ""


def test_bench_not_root_without_wrk_says_it_uses_the_python_load_generator(
    tmp_path: Path,
) -> None:
    tool, said = load_tool(tmp_path, "auto", uid=1000, apt_get=True)

    assert tool == "auto"
    assert "install" not in said
    assert "Python load generator" in said


def test_make_bench_picks_the_load_tool_before_the_benchmarks_run() -> None:
    plan = subprocess.run(
        ["make", "--dry-run", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout

    assert plan.index("tools/bench-load-tool.sh") < plan.index("-m benchmarks --load-tool")
