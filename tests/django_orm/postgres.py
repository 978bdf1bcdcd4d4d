"""A throwaway PostgreSQL server for the tests: Debian's ``postgresql-15`` binaries, ``initdb``
and ``pg_ctl`` run as the ``postgres`` user when the tests run as root (PostgreSQL refuses
root), on 127.0.0.1 with an ephemeral port and trust authentication, in a temporary
directory that is removed once the server has stopped. ``.ci/install-postgresql`` installs
the package where it is missing."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import HOST, free_port

INSTALL_HINT = "Debian's postgresql-15 is not installed: .ci/install-postgresql installs it"


def server_binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: Debian's, the newest first, else on PATH."""
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True):
        return Path(found).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str = "postgres"

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname=dbname, autocommit=True
        )


def _run_as(user: str | None, argv: list[str], cwd: Path) -> None:
    result = subprocess.run(
        argv, user=user, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}"


@contextlib.contextmanager
def running_postgres(binaries: Path) -> Iterator[Postgres]:
    """Start a PostgreSQL server from ``binaries`` in a temporary directory; stop it after."""
    user = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="asgi-cleanup-pg-"))
    data = base / "data"
    try:
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(base, entry.pw_uid, entry.pw_gid)
        initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres"]
        _run_as(user, [*initdb, "--auth=trust", "--no-sync", "-E", "UTF8"], base)
        port = free_port()
        # No Unix socket (-k ''), fsync off: a test server that is thrown away.
        options = f"-h {HOST} -p {port} -k '' -c fsync=off -c max_connections=100"
        pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(base / "log")]
        _run_as(user, [*pg_ctl, "-o", options, "-w", "-t", "30", "start"], base)
        try:
            yield Postgres(HOST, port)
        finally:
            _run_as(user, [*pg_ctl, "-m", "immediate", "-w", "stop"], base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
