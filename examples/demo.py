"""A small Starlette app under CleanupMiddleware, served by uvicorn on 127.0.0.1.

    make demo                           # serve on 127.0.0.1:8000 until Ctrl+C
    PORT=8001 make demo                 # the same on another port
    python examples/demo.py --port 8001 # the same, without make
    python examples/demo.py --once      # serve, send one request to each route, then stop

Every cleanup prints what it does, so the order and timing are visible in the terminal:
the response is out before a slow cleanup ends, a failing cleanup only reaches the log, and
the directive cleanups of examples/cleanup.toml run after the endpoint's own.
"""

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import time
from pathlib import Path

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_cleanup import CleanupMiddleware

log = logging.getLogger("demo")


async def close_session(name: str, request: Request) -> None:
    outcome = request.scope["cleanup"].outcome
    log.info(
        "cleanup: closing session %s (status %s, %.1f ms)",
        name,
        outcome.status,
        outcome.duration * 1e3,
    )


def write_audit_line(path: str) -> None:
    # Sync cleanups run in a worker thread, never on the event loop.
    log.info("cleanup: audit line for %s written from a worker thread", path)


async def home(request: Request) -> PlainTextResponse:
    cleanup = request.scope["cleanup"]
    cleanup.register(write_audit_line, request.url.path)  # runs last
    cleanup.register(close_session, "db", request)  # runs first: last in, first out
    return PlainTextResponse("hello; watch the server's terminal\n")


async def slow(request: Request) -> PlainTextResponse:
    started = time.monotonic()

    async def flush_metrics() -> None:
        await anyio.sleep(2)
        log.info(
            "cleanup: metrics flushed %.1f s after the request began", time.monotonic() - started
        )

    request.scope["cleanup"].register(flush_metrics)
    return PlainTextResponse("sent at once; the cleanup takes 2 s more\n")


async def failing(request: Request) -> PlainTextResponse:
    def broken_cleanup() -> None:
        raise RuntimeError("the cache is unreachable")

    request.scope["cleanup"].register(broken_cleanup)
    return PlainTextResponse("fine for the client; the failure goes to the log\n")


async def admin(request: Request) -> PlainTextResponse:
    return PlainTextResponse("admin page; cleanup.toml adds an audit cleanup under /admin\n")


async def crash(request: Request) -> PlainTextResponse:
    async def report() -> None:
        outcome = request.scope["cleanup"].outcome
        log.info("cleanup: the app raised %r; cleanups still ran", outcome.exception)

    request.scope["cleanup"].register(report)
    raise RuntimeError("the endpoint crashed (on purpose: uvicorn logs it and answers 500)")


app = CleanupMiddleware(
    Starlette(
        routes=[
            Route("/", home),
            Route("/slow", slow),
            Route("/failing", failing),
            Route("/crash", crash),
            Route("/admin/users", admin),
        ]
    ),
    settings=Path(__file__).with_name("cleanup.toml"),
)


ROUTES = ("/", "/slow", "/failing", "/crash", "/admin/users")


async def visit_each_route(server: uvicorn.Server, base: str) -> None:
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes only this flag
        await asyncio.sleep(0.05)
    async with httpx.AsyncClient(base_url=base) as client:
        for path in ROUTES:
            started = time.monotonic()
            response = await client.get(path)
            log.info(
                "client: GET %s -> %s in %.0f ms",
                path,
                response.status_code,
                (time.monotonic() - started) * 1e3,
            )
    server.should_exit = True  # the lifespan shutdown waits for the slow cleanup


def bind(port: int) -> socket.socket:
    """A socket bound to 127.0.0.1:``port``, or exit saying why and what to do instead."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"Cannot serve on 127.0.0.1:{port}: {exc.strerror}. "
            "Choose another port with --port N or PORT=N."
        ) from None
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--once", action="store_true", help="visit each route once, then stop")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)-12s %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Bound before anything is printed, so a busy port is the first and only thing said.
    sock = bind(args.port)
    port: int = sock.getsockname()[1]  # --port 0: a free port
    base = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    if args.once:

        async def run_once() -> None:
            await asyncio.gather(server.serve(sockets=[sock]), visit_each_route(server, base))

        asyncio.run(run_once())
        return
    print(f"Serving on {base}; try:")
    for path in ROUTES:
        print(f"  curl -i {base}{path}")
    print("Ctrl+C to stop (shutdown waits for cleanups still running).")
    # uvicorn re-raises the interrupt once its shutdown (cleanups included) is over.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    print("Stopped.")


if __name__ == "__main__":
    main()
