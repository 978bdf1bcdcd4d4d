import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.real_server

SCRIPT = textwrap.dedent(
    """
    import threading, time
    import anyio
    from asgi_cleanup import CleanupMiddleware

    def stuck_cleanup():
        threading.Event().wait()  # never returns

    async def app(scope, receive, send):
        scope["cleanup"].register(stuck_cleanup)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main():
        scope = {"type": "http", "method": "GET", "path": "/", "headers": []}

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            pass

        await CleanupMiddleware(app, timeout=0.1)(scope, receive, send)
        print("request done", flush=True)

    anyio.run(main, backend="{backend}")
    """
)


def run_to_exit(backend: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("{backend}", backend)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return result, time.monotonic() - started


def test_abandoned_sync_cleanup_never_keeps_the_process_from_exiting() -> None:
    for backend in ("asyncio", "trio"):
        result, elapsed = run_to_exit(backend)
        assert result.returncode == 0, result.stderr
        assert "request done" in result.stdout
        assert "timed out" in result.stderr
        assert elapsed < 10
