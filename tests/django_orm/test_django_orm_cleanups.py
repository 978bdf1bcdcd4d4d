"""Django sync cleanups that write through the ORM, under a real server, on PostgreSQL 15 and
SQLite: with ``asgi_cleanup.django.closing_old_connections`` every audit row is there, no
connection outlives its run and no transaction is left open; without it, the same load shows
the leak: connections held by the worker threads after their cleanups, and a transaction a
cleanup left open keeping what that thread writes next uncommitted.

``orm_project`` is the Django project; ``postgres.py`` runs the database server.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from postgres import INSTALL_HINT, Postgres, running_postgres, server_binaries
from servers import HOST, ServerProcess

pytestmark = pytest.mark.real_server

N = 2_000  # requests, each with one sync cleanup that writes one audit row
THREAD_LIMIT = 4
CLIENTS = 8  # concurrent keep-alive connections; Django's own DB connections are at most these
FORGETFUL_EVERY = 200  # one request in so many has a cleanup that leaves autocommit off
APP = "django_orm.orm_project.asgi:application"
RULES = [pytest.param("on", id="connection-rules"), pytest.param("off", id="no-rules-leaks")]


def paths(forgetful: bool) -> list[str]:
    """Half sync views (which also read through the ORM), half async; some forgetful ones."""
    chosen = []
    for n in range(N):
        if forgetful and n % FORGETFUL_EVERY == FORGETFUL_EVERY // 2:
            chosen.append(f"/forgetful/{n}")
        else:
            chosen.append(f"/sync/{n}" if n % 2 else f"/async/{n}")
    return chosen


def load(port: int, all_paths: list[str]) -> None:
    """GET every path, over ``CLIENTS`` keep-alive connections at once; each answers 200."""
    failures: list[str] = []

    def client(mine: list[str]) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        try:
            for path in mine:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    failures.append(f"{path}: {response.status}")
        finally:
            conn.close()

    threads = [
        threading.Thread(target=client, args=(all_paths[i::CLIENTS],)) for i in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures[:5]


def get(port: int, path: str) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", path)
        assert conn.getresponse().status == 200
    finally:
        conn.close()


@dataclass
class Sampler:
    """Samples ``pg_stat_activity`` for database ``dbname`` every few milliseconds: client
    connections, and those idle in a transaction (this sampler's own excluded)."""

    postgres: Postgres
    dbname: str
    peak: int = 0
    peak_idle_in_transaction: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def count(self, conn: object) -> tuple[int, int]:
        row = conn.execute(  # type: ignore[attr-defined]
            "SELECT count(*), count(*) FILTER (WHERE state = 'idle in transaction')"
            " FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()",
            (self.dbname,),
        ).fetchone()
        return int(row[0]), int(row[1])

    def run(self) -> None:
        with self.postgres.connect() as conn:
            while not self._stop.is_set():
                total, idle_in_transaction = self.count(conn)
                self.peak = max(self.peak, total)
                self.peak_idle_in_transaction = max(
                    self.peak_idle_in_transaction, idle_in_transaction
                )
                self.samples += 1
                time.sleep(0.005)

    @contextlib.contextmanager
    def sampling(self) -> Iterator[Sampler]:
        thread = threading.Thread(target=self.run)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=10)

    def settled(self, wanted: Callable[[tuple[int, int]], bool]) -> tuple[int, int]:
        """Connections and idle-in-transaction ones once ``wanted`` holds, or after 3 s (the
        server's backends end a moment after their clients close)."""
        with self.postgres.connect() as conn:
            deadline = time.monotonic() + 3.0
            while not wanted(counts := self.count(conn)) and time.monotonic() < deadline:
                time.sleep(0.02)
            return counts


def serve(tmp_path: Path, database: str, rules: str, kind: str) -> ServerProcess:
    env = {
        "DJANGO_SETTINGS_MODULE": "django_orm.orm_project.settings",
        "ORM_DATABASE": database,
        "ORM_CONNECTION_RULES": rules,
        "ORM_THREAD_LIMIT": str(THREAD_LIMIT),
    }
    return ServerProcess(kind, tmp_path / "server.log", app=APP, env=env)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    binaries = server_binaries()
    if binaries is None:
        pytest.skip(INSTALL_HINT)
    with running_postgres(binaries) as server:
        yield server


@pytest.fixture
def audit_database(postgres: Postgres, request: pytest.FixtureRequest) -> str:
    name = f"audit_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
    with postgres.connect() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    with postgres.connect(name) as conn:
        conn.execute(
            "CREATE TABLE audit_row (id bigserial PRIMARY KEY, request integer NOT NULL,"
            " view varchar(20) NOT NULL)"
        )
    return name


@pytest.mark.parametrize("rules", RULES)
def test_django_orm_cleanups_on_postgres_keep_connections_within_bounds_and_close_them(
    rules: str, postgres: Postgres, audit_database: str, tmp_path: Path
) -> None:
    database = f"postgresql:{postgres.host}:{postgres.port}:{audit_database}"
    server = serve(tmp_path, database, rules, "uvicorn").start()
    sampler = Sampler(postgres, audit_database)
    began = time.monotonic()
    try:
        with sampler.sampling():
            load(server.port, paths(forgetful=True))
            get(server.port, "/drained")  # every cleanup has run
        served = time.monotonic() - began
        if rules == "on":
            left, left_in_transaction = sampler.settled(lambda counts: counts == (0, 0))
        else:
            left, left_in_transaction = sampler.settled(lambda counts: counts[0] <= THREAD_LIMIT)
        with postgres.connect(audit_database) as conn:
            rows = conn.execute("SELECT count(*), count(DISTINCT request) FROM audit_row")
            count, distinct = rows.fetchone()
    finally:
        server.stop()
    figures = (
        f"{rules}: {count} rows of {N}, at most {sampler.peak} connections "
        f"({sampler.peak_idle_in_transaction} idle in transaction) over {sampler.samples} "
        f"samples, {left} left after ({left_in_transaction} idle in transaction), "
        f"{served:.1f} s\n"
    )
    print(figures, end="")
    with open(tmp_path / "figures.txt", "a", encoding="utf-8") as out:
        out.write(figures)

    # Connections: the middleware's worker threads, plus Django's own (one per request served
    # at once at most), whichever way; the difference is whether they outlive their work.
    assert sampler.samples > 10
    assert 0 < sampler.peak <= THREAD_LIMIT + CLIENTS, figures
    if rules == "on":
        assert (count, distinct) == (N, N), figures
        assert (left, left_in_transaction) == (0, 0), figures
    else:
        # The leak: each worker thread that ran a cleanup keeps its connection; a thread whose
        # cleanup left autocommit off keeps a transaction open, and the rows it wrote since.
        assert 0 < left <= THREAD_LIMIT, figures
        assert 0 < left_in_transaction <= left, figures
        assert count < N, figures


def sqlite_files_open(pid: int, database: Path) -> int:
    """File descriptors of process ``pid`` on the SQLite database (or its journal): its open
    connections."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        count += target.startswith(str(database))
    return count


@pytest.mark.parametrize("rules", RULES)
def test_django_orm_cleanups_on_sqlite_write_every_row_and_close_their_connections(
    rules: str, tmp_path: Path
) -> None:
    database = tmp_path / "audit.sqlite3"
    with contextlib.closing(sqlite3.connect(database)) as conn:
        conn.execute(
            "CREATE TABLE audit_row (id integer PRIMARY KEY AUTOINCREMENT,"
            " request integer NOT NULL, view varchar(20) NOT NULL)"
        )
        conn.commit()
    server = serve(tmp_path, f"sqlite3:{database}", rules, "daphne").start()
    try:
        load(server.port, paths(forgetful=False))
        get(server.port, "/drained")
        open_after = sqlite_files_open(server.pid, database)
    finally:
        server.stop()
    with contextlib.closing(sqlite3.connect(database)) as conn:
        count, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT request) FROM audit_row"
        ).fetchone()
    print(f"sqlite {rules}: {count} rows of {N}, {open_after} connections open after")

    assert (count, distinct) == (N, N)
    if rules == "on":
        assert open_after == 0
    else:
        assert 0 < open_after <= THREAD_LIMIT  # held by the worker threads: the leak
