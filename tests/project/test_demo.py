import socket
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.real_server

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_demo_serves_each_route_and_runs_dynamic_then_directive_cleanups() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--once", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = result.stderr + result.stdout
    assert result.returncode == 0, output
    for line in (
        "client: GET / -> 200",
        "client: GET /failing -> 200",
        "client: GET /crash -> 500",
        "Cleanup __main__.failing.<locals>.broken_cleanup failed for GET /failing",
        "directive ([[location]] /admin): audit entry for /admin/users",
    ):
        assert line in output
    # The slow cleanup ends after its response was received, and before the server stops.
    assert output.index("client: GET /slow -> 200") < output.index("metrics flushed")
    # Dynamic cleanups first (last registered first), then the directive cleanups.
    home = [
        line.split("  ", 1)[-1].strip()
        for line in output.splitlines()
        if "closing session db" in line
        or "audit line for /" in line
        or "directive (server-wide): GET / " in line
    ]
    assert [line.split(":")[0] for line in home] == [
        "cleanup",
        "cleanup",
        "directive (server-wide)",
    ]
    assert "closing session" in home[0]


def test_demo_on_a_busy_port_says_so_first_and_names_the_port_options() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(DEMO), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode != 0
    assert "Serving on" not in result.stdout
    first_line = (result.stderr + result.stdout).strip().splitlines()[0]
    assert first_line.startswith(f"Cannot serve on 127.0.0.1:{port}: Address already in use.")
    assert "--port N or PORT=N" in first_line


def test_make_demo_installs_the_demo_extra_only() -> None:
    plan = subprocess.run(
        ["make", "--dry-run", "--always-make", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    installs = [line for line in plan.splitlines() if "pip install" in line and "-e" in line]
    assert installs, plan
    assert all("'.[demo]'" in line for line in installs), installs


@pytest.mark.timeout(240)
def test_demo_starts_in_a_fresh_venv_with_only_the_demo_extra(tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"{ROOT}[demo]"],
        check=True,
        timeout=200,
    )
    # From elsewhere, so that asgi_cleanup comes from the venv, not from the clone.
    result = subprocess.run(
        [str(python), str(DEMO), "--once", "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = result.stderr + result.stdout
    assert result.returncode == 0, output
    assert "client: GET / -> 200" in output
