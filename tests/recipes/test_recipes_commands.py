"""Every server command on the recipe pages works as written from the repository root.

Each ``uvicorn``/``hypercorn``/``granian``/``daphne`` line of a ``console`` block in
``docs/recipes/*.md`` is run from the root (as ``python -m SERVER``, with a free port added),
and the ``curl`` lines of its block are sent with the status their comment names (200 when it
names none). A command with ``--log-config`` must make the cleanups' INFO lines visible, as
the pages promise.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from recipe_servers import get, serving
from servers import HOST, free_port

pytestmark = pytest.mark.real_server

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES = REPO_ROOT / "docs" / "recipes"
SERVERS = ("uvicorn", "hypercorn", "granian", "daphne")
CONSOLE = re.compile(r"^```console\n(.*?)^```", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Command:
    page: str
    line: str
    #: (method, path, expected status) of the block's curl lines.
    requests: tuple[tuple[str, str, int], ...]

    @property
    def server(self) -> str:
        return next(word for word in shlex.split(self.line) if "=" not in word)

    def argv(self, port: int) -> tuple[dict[str, str], list[str]]:
        """The environment assignments and the command, run by this Python, on ``port``."""
        words = shlex.split(self.line)
        env = {}
        while "=" in words[0]:
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        server, args = words[0], words[1:]
        if server == "hypercorn":
            args += ["--bind", f"{HOST}:{port}"]
        elif server == "daphne":
            args += ["-p", str(port)]
        else:
            args += ["--port", str(port)]
        return env, [sys.executable, "-m", server, *args]


def commands() -> list[Command]:
    found = []
    for page in sorted(PAGES.glob("*.md")):
        for block in CONSOLE.findall(page.read_text(encoding="utf-8")):
            requests, servers = [], []
            for raw in block.splitlines():
                words = shlex.split(raw, comments=True)
                program = next((w for w in words if "=" not in w), "")
                if program == "curl":
                    path = "/" + words[-1].split(f"{HOST}:8000/", 1)[1]
                    method = words[words.index("-X") + 1] if "-X" in words else "GET"
                    status = re.search(r"\b([1-5]\d\d)\b", raw.partition("#")[2])
                    requests.append((method, path, int(status.group(1)) if status else 200))
                elif program in SERVERS:
                    servers.append(shlex.join(words))
            for line in servers:
                found.append(Command(page.name, line, tuple(requests) or (("GET", "/", 200),)))
    return found


def test_the_recipe_pages_show_a_server_command_for_every_server() -> None:
    servers = {c.server for c in commands()}

    assert servers == set(SERVERS)
    assert len(commands()) >= 12


@pytest.mark.parametrize("command", commands(), ids=[f"{c.page}:{c.line}" for c in commands()])
def test_recipe_page_server_command_works_as_written_from_the_repository_root(
    command: Command, tmp_path: Path
) -> None:
    port = free_port()
    extra_env, argv = command.argv(port)
    # As written: nothing on sys.path but what the command itself puts there.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | extra_env
    with serving(argv, port, cwd=REPO_ROOT, env=env, log_path=tmp_path / "server.log") as server:
        statuses = [get(port, path, method)[0] for method, path, _ in command.requests]
        assert statuses == [status for *_, status in command.requests], server.log()
        if "--log-config" in command.line:
            log = server.wait_for(lambda log: "directive cleanup: GET / ended" in log, 5.0)
            assert "directive cleanup: GET / ended with status 200" in log, log
