"""What each way of running a Django app's sync ORM cleanups costs, and what it leaves open:
``python -m benchmarks.django_orm [--requests N] [--rounds R]`` (docs/recipes/django.md).

Each request of an in-process ASGI app registers one cleanup that writes a row through the ORM,
on a throwaway PostgreSQL 15 (tests/django_orm/postgres.py starts it) and on SQLite in a file.
Each option runs in a process of its own, rounds interleaved; the table gives the medians of
µs per request, one request at a time and 8 at once, and the connections left open after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"

OPTIONS = {
    "none": "worker threads, no connection rules (leaks)",
    "rules": "worker threads + closing_old_connections, CONN_MAX_AGE=0",
    "rules-age": "worker threads + closing_old_connections, CONN_MAX_AGE=60",
    "tsafe": "sync_to_async(thread_sensitive=True), no rules (leaks)",
    "tsafe-rules": "sync_to_async(thread_sensitive=True) + close_old_connections",
}


def child(option: str, database: str, requests: int) -> dict[str, Any]:
    """Measure ``option`` in this process: Django set up on ``database``."""
    import anyio
    import django
    from django.conf import settings

    if database.startswith("postgresql:"):
        host, port, name = database.split(":")[1:]
        db = {"ENGINE": "django.db.backends.postgresql", "HOST": host, "PORT": port,
              "NAME": name, "USER": "postgres"}  # fmt: skip
    else:
        db = {"ENGINE": "django.db.backends.sqlite3", "NAME": database.split(":", 1)[1],
              "OPTIONS": {"timeout": 20}}  # fmt: skip
    db["CONN_MAX_AGE"] = 60 if option == "rules-age" else 0
    settings.configure(DATABASES={"default": db}, USE_TZ=True)
    django.setup()
    from asgiref.sync import sync_to_async
    from django.db import close_old_connections, connection

    from asgi_cleanup import CleanupMiddleware
    from asgi_cleanup.django import closing_old_connections

    from .inprocess import SCOPE, receive, send

    def write_row() -> None:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO audit_row (request, view) VALUES (1, 'bench')")

    def write_row_by_the_rules() -> None:
        with closing_old_connections():
            write_row()

    cleanup: Any = {
        "none": write_row,
        "rules": write_row,
        "rules-age": write_row,
        "tsafe": sync_to_async(write_row, thread_sensitive=True),
        "tsafe-rules": sync_to_async(write_row_by_the_rules, thread_sensitive=True),
    }[option]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["cleanup"].register(cleanup)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    rules = closing_old_connections if option.startswith("rules") else None
    middleware = CleanupMiddleware(app, thread_limit=8, sync_run_context=rules)

    async def one() -> None:
        await middleware(dict(SCOPE), receive, send)

    async def measure() -> dict[str, float]:
        for _ in range(20):  # warm-up: threads started, code paths imported
            await one()
        began = time.perf_counter()
        for _ in range(requests):
            await one()
        sequential = (time.perf_counter() - began) / requests * 1e6
        began = time.perf_counter()

        async def client() -> None:
            for _ in range(requests // 8):
                await one()

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(client)
        concurrent = (time.perf_counter() - began) / (requests // 8 * 8) * 1e6
        await middleware.drain()
        return {"sequential_us": sequential, "concurrent_us": concurrent}

    result: dict[str, Any] = anyio.run(measure)
    if database.startswith("postgresql:"):
        import psycopg

        time.sleep(0.3)  # a backend ends a moment after its client closes
        with psycopg.connect(host=host, port=port, user="postgres", dbname=name) as conn:
            result["left"] = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE state = 'idle in transaction')"
                " FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND pid <> pg_backend_pid()"
            ).fetchone()[0]
    close_old_connections()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("OPTION", "DATABASE"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.requests)))
        return
    sys.path[:0] = [str(TESTS), str(TESTS / "django_orm")]
    from postgres import running_postgres, server_binaries

    binaries = server_binaries()
    if binaries is None:
        sys.exit("PostgreSQL server binaries not found: run .ci/install-postgresql")
    with running_postgres(binaries) as pg, tempfile.TemporaryDirectory() as tmp:
        with pg.connect() as conn:
            conn.execute("CREATE TABLE audit_row (request integer, view text)")
        sqlite = Path(tmp) / "bench.sqlite3"
        import sqlite3

        with sqlite3.connect(sqlite) as conn:
            conn.execute("CREATE TABLE audit_row (request integer, view text)")
        databases = {"PostgreSQL 15": f"postgresql:{pg.host}:{pg.port}:postgres",
                     "SQLite": f"sqlite:{sqlite}"}  # fmt: skip
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for db_name, database in databases.items():
                for option in OPTIONS:
                    argv = [sys.executable, "-m", "benchmarks.django_orm", "--child", option,
                            database, "--requests", str(args.requests)]  # fmt: skip
                    out = subprocess.run(argv, capture_output=True, text=True, check=True)
                    measured = json.loads(out.stdout)
                    results.setdefault((db_name, option), []).append(measured)
    print(f"{args.rounds} rounds of {args.requests} requests, medians; Python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs")  # fmt: skip
    print("| database | option | µs/request, 1 at a time | µs/request, 8 at once | "
          "connections left open |")  # fmt: skip
    print("|---|---|---:|---:|---:|")
    for (db_name, option), runs in results.items():
        seq = statistics.median(r["sequential_us"] for r in runs)
        con = statistics.median(r["concurrent_us"] for r in runs)
        left = max((r.get("left", "–") for r in runs), key=str)
        print(f"| {db_name} | {OPTIONS[option]} | {seq:.0f} | {con:.0f} | {left} |")


if __name__ == "__main__":
    main()
