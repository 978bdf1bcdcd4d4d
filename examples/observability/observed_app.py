"""The app the observability recipes wrap: one cleanup that works, one that fails."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def close_session() -> None:
    pass


async def flush_audit() -> None:
    raise ConnectionError("audit store unreachable")


async def home(request: Request) -> PlainTextResponse:
    request.scope["cleanup"].register(flush_audit)
    request.scope["cleanup"].register(close_session)
    return PlainTextResponse("hello")


inner_app = Starlette(routes=[Route("/", home)])
