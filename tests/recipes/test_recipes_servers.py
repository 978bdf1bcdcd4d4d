"""Each real server serves one recipe from examples/recipes as its page in docs/recipes says,
and the recipe's cleanups run after each response with the outcome the framework gives.

uvicorn serves FastAPI, hypercorn serves Quart (asyncio) and Starlette (trio), granian serves
Litestar, daphne serves Django. The servers run as subprocesses on 127.0.0.1 with the examples'
directory as working directory; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from recipe_servers import STOP_TIMEOUT, Server, get, serving
from servers import HOST, free_port

pytestmark = pytest.mark.real_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "recipes"
REPO_ROOT = EXAMPLES.parents[1]

# Root logger at INFO on stderr, so that the examples' cleanup records reach the server log.
# The handler names are granian's, which merges this into its own config.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        name: {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
        for name in ("console", "access")
    },
    "root": {"level": "INFO", "handlers": ["console"]},
}


@dataclass(frozen=True)
class Case:
    server: str
    target: str
    #: What the cleanups see of GET /error: "status 500, exception ..." as logged.
    error_outcome: str

    def command(self, port: int, log_config: Path) -> list[str]:
        python = [sys.executable, "-m"]
        if self.server == "uvicorn":
            return [*python, "uvicorn", self.target, "--host", HOST, "--port", str(port),
                    "--lifespan", "on", "--log-config", str(log_config)]  # fmt: skip
        if self.server.startswith("hypercorn"):
            worker = "trio" if self.server == "hypercorn-trio" else "asyncio"
            return [*python, "hypercorn", self.target, "--bind", f"{HOST}:{port}",
                    "--worker-class", worker, "--log-config", f"json:{log_config}"]  # fmt: skip
        if self.server == "granian":
            return [*python, "granian", "--interface", "asgi", "--host", HOST,
                    "--port", str(port), "--log-config", str(log_config), self.target]  # fmt: skip
        if self.server == "daphne":  # logs at INFO on stderr by default
            return [*python, "daphne", "-b", HOST, "-p", str(port), self.target]
        raise ValueError(self.server)


CASES = [
    Case("uvicorn", "fastapi_app:app", "status 500, exception RuntimeError('the endpoint failed')"),
    Case("hypercorn", "quart_app:app", "status 500, exception None"),
    Case(
        "hypercorn-trio",
        "starlette_app:app",
        "status 500, exception RuntimeError('the endpoint failed')",
    ),
    Case("granian", "litestar_app:app", "status 500, exception None"),
    Case("daphne", "django_project.asgi:application", "status 500, exception None"),
]


@contextlib.contextmanager
def serving_case(case: Case, tmp_path: Path) -> Iterator[Server]:
    """Serve ``case`` from the examples' directory, its logging at INFO."""
    log_config = tmp_path / "logging.json"
    log_config.write_text(json.dumps(LOG_CONFIG), encoding="utf-8")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(REPO_ROOT)])}
    argv = case.command(port, log_config)
    with serving(argv, port, cwd=EXAMPLES, env=env, log_path=tmp_path / "server.log") as server:
        yield server


def cleanup_lines(log: str, status: int, path: str) -> list[str]:
    """The cleanup records of the request to ``path`` that ended with ``status``, in order."""
    lines = []
    for line in log.splitlines():
        for kind in ("dynamic cleanup: ", "directive cleanup: "):
            if kind in line:
                text = kind + line.split(kind, 1)[1]
                directive_of_path = f" {path} ended with " in text
                if f"status {status}," in text and (
                    kind.startswith("dynamic") or directive_of_path
                ):
                    lines.append(text)
    return lines


@pytest.mark.parametrize("case", CASES, ids=[case.server for case in CASES])
def test_real_server_serves_the_recipe_and_its_cleanups_run_after_each_response(
    case: Case, tmp_path: Path
) -> None:
    with serving_case(case, tmp_path) as server:
        status, body = get(server.port, "/")
        error_status, _ = get(server.port, "/error")

        assert (status, error_status) == (200, 500)
        assert body.startswith(b"hello") or body == b'{"hello":"fastapi"}'

        def both_done(log: str) -> bool:
            return (
                len(cleanup_lines(log, 200, "/")) >= 2
                and len(cleanup_lines(log, 500, "/error")) >= 2
            )

        log = server.wait_for(both_done, timeout=5.0)
        server.proc.send_signal(signal.SIGINT)
        exit_code = server.proc.wait(timeout=STOP_TIMEOUT)

    ok, failed = cleanup_lines(log, 200, "/"), cleanup_lines(log, 500, "/error")
    assert [line.split(":")[0] for line in ok] == ["dynamic cleanup", "directive cleanup"], log
    assert "status 200, exception None" in ok[0]
    assert "status 200, exception None, response complete, client stayed" in ok[1]
    assert [line.split(":")[0] for line in failed] == ["dynamic cleanup", "directive cleanup"], log
    assert case.error_outcome in failed[0]
    assert f"{case.error_outcome}, response complete, client stayed" in failed[1]
    assert exit_code == 0, log
