import socket
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"


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
