from typing import Any

import anyio
import pytest
from raw import Recorder, call, http_scope

from asgi_cleanup import CleanupMiddleware, Outcome
from asgi_cleanup._types import Message, Receive, Scope, Send


def recording_app(
    *messages: Message, raise_after: Exception | None = None, receive_first: bool = False
) -> tuple[Any, list[Outcome]]:
    """An app that sends ``messages``, then optionally raises; it records the Outcome."""
    outcomes: list[Outcome] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]
        registry.register(lambda: outcomes.append(registry.outcome))
        if receive_first:
            await receive()
        for message in messages:
            await send(message)
        if raise_after is not None:
            raise raise_after

    return app, outcomes


START = {"type": "http.response.start", "status": 200, "headers": []}
BODY = {"type": "http.response.body", "body": b"done"}
PARTIAL = {"type": "http.response.body", "body": b"part", "more_body": True}
# Starlette's TemplateResponse sends it before the start where the server offers the
# extension (its TestClient does).
DEBUG = {"type": "http.response.debug", "info": {"template": None, "context": {}}}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("messages", "status", "complete"),
    [
        pytest.param([START, BODY], 200, True, id="complete"),
        pytest.param([START, PARTIAL], 200, False, id="unfinished body"),
        pytest.param([START], 200, False, id="start only"),
        pytest.param([], None, False, id="nothing sent"),
        pytest.param(
            [START, {"type": "http.response.pathsend", "path": "/etc/hostname"}],
            200,
            True,
            id="pathsend",
        ),
        pytest.param(
            [START, {"type": "http.response.zerocopysend", "file": 3, "more_body": False}],
            200,
            True,
            id="zerocopysend",
        ),
        pytest.param(
            [{**START, "trailers": True}, BODY],
            200,
            False,
            id="trailers announced, not sent",
        ),
        pytest.param(
            [
                {**START, "trailers": True},
                BODY,
                {"type": "http.response.trailers", "headers": [], "more_trailers": False},
            ],
            200,
            True,
            id="trailers sent",
        ),
        pytest.param(
            [DEBUG, {**START, "status": 201}, BODY], 201, True, id="debug info before the start"
        ),
        pytest.param(
            [DEBUG, {**START, "trailers": True}, BODY],
            200,
            False,
            id="debug info before a start announcing trailers",
        ),
        pytest.param([DEBUG], None, False, id="debug info only"),
    ],
)
async def test_outcome_status_and_response_complete(
    messages: list[Message], status: int | None, complete: bool
) -> None:
    app, outcomes = recording_app(*messages)
    middleware = CleanupMiddleware(app)
    await call(middleware)
    await middleware.drain()
    [outcome] = outcomes
    assert outcome.status == status
    assert outcome.response_complete is complete
    assert outcome.exception is None
    assert outcome.client_disconnected is False


@pytest.mark.anyio
async def test_outcome_carries_the_scope_and_a_duration() -> None:
    app, outcomes = recording_app(START, BODY)
    scope = http_scope("/report")
    await call(CleanupMiddleware(app), scope)
    [outcome] = outcomes
    assert outcome.scope is scope
    assert 0 <= outcome.duration < 1


@pytest.mark.anyio
async def test_outcome_records_the_app_exception() -> None:
    error = LookupError("missing")
    app, outcomes = recording_app(raise_after=error)
    middleware = CleanupMiddleware(app)
    with pytest.raises(LookupError) as raised:
        await call(middleware)
    assert raised.value is error
    await middleware.drain()
    [outcome] = outcomes
    assert outcome.exception is error
    assert outcome.status is None
    assert outcome.response_complete is False


@pytest.mark.anyio
async def test_disconnect_received_before_the_response_completed_counts() -> None:
    app, outcomes = recording_app(START, PARTIAL, receive_first=True)
    middleware = CleanupMiddleware(app)
    await call(middleware, recorder=Recorder([{"type": "http.disconnect"}]))
    await middleware.drain()
    [outcome] = outcomes
    assert outcome.client_disconnected is True
    assert outcome.response_complete is False


@pytest.mark.anyio
async def test_disconnect_received_after_the_response_completed_does_not_count() -> None:
    outcomes: list[Outcome] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]
        registry.register(lambda: outcomes.append(registry.outcome))
        await send(START)
        await send(BODY)
        assert (await receive())["type"] == "http.disconnect"  # as uvicorn and daphne answer

    await call(CleanupMiddleware(app), recorder=Recorder([{"type": "http.disconnect"}]))
    [outcome] = outcomes
    assert outcome.client_disconnected is False
    assert outcome.response_complete is True


@pytest.mark.anyio
async def test_send_that_raises_counts_as_a_client_disconnect() -> None:
    app, outcomes = recording_app(START, BODY)

    class GoneRecorder(Recorder):
        async def send(self, message: Message) -> None:
            if message["type"] == "http.response.body":
                raise OSError("connection reset")
            await super().send(message)

    middleware = CleanupMiddleware(app)
    with pytest.raises(OSError, match="connection reset"):
        await call(middleware, recorder=GoneRecorder())
    await middleware.drain()
    [outcome] = outcomes
    assert outcome.client_disconnected is True
    assert outcome.response_complete is False
    assert isinstance(outcome.exception, OSError)


@pytest.mark.anyio
async def test_message_rejected_after_the_response_completed_is_not_a_disconnect() -> None:
    # An app that sends past the end of its response: uvicorn raises for the extra message.
    app, outcomes = recording_app(START, BODY, BODY)

    class StrictRecorder(Recorder):
        async def send(self, message: Message) -> None:
            if self.sent and self.sent[-1] is BODY:
                raise RuntimeError("Unexpected ASGI message sent, after response completed")
            await super().send(message)

    middleware = CleanupMiddleware(app)
    with pytest.raises(RuntimeError, match="after response completed"):
        await call(middleware, recorder=StrictRecorder())
    await middleware.drain()
    [outcome] = outcomes
    assert outcome.client_disconnected is False
    assert outcome.response_complete is True


@pytest.mark.anyio
async def test_send_after_the_app_call_returned_changes_nothing_in_the_outcome() -> None:
    outcomes: list[Outcome] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]

        async def late_send() -> None:
            with pytest.raises(RuntimeError, match="after the app call returned"):
                await send(BODY)
            outcomes.append(registry.outcome)

        registry.register(late_send)
        await send(START)  # and returns with the response unfinished

    middleware = CleanupMiddleware(app)
    await call(middleware)
    await middleware.drain()
    [outcome] = outcomes
    assert outcome.response_complete is False
    assert outcome.client_disconnected is False


def test_outcome_is_read_only() -> None:
    outcome = Outcome(http_scope(), 200, None, True, False, 0.1)
    with pytest.raises(AttributeError):
        outcome.status = 500  # type: ignore[misc]


def test_outcome_repr_shows_no_header_or_query_string() -> None:
    scope = http_scope(
        "/account", query_string=b"token=secret-1", headers=[(b"cookie", b"session=secret-2")]
    )
    text = repr(Outcome(scope, 200, None, True, False, 0.25))
    assert "/account" in text
    assert "status=200" in text
    assert "secret" not in text


@pytest.mark.anyio
async def test_disconnect_reported_while_the_last_message_is_being_sent_does_not_count() -> None:
    # As hypercorn does: handing it the final body ends the stream, and a listener waiting
    # in receive() (Starlette's FileResponse has one) gets http.disconnect before send()
    # returns; the listener then cancels the sender.
    outcomes: list[Outcome] = []
    stream_ended = anyio.Event()

    async def receive() -> Message:
        await stream_ended.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            stream_ended.set()
            await anyio.sleep(0.05)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]
        registry.register(lambda: outcomes.append(registry.outcome))
        async with anyio.create_task_group() as tg:

            async def stream() -> None:
                await send(START)
                await send(BODY)
                tg.cancel_scope.cancel()

            async def listen() -> None:
                await receive()
                tg.cancel_scope.cancel()

            tg.start_soon(stream)
            tg.start_soon(listen)

    await CleanupMiddleware(app)(http_scope(), receive, send)
    [outcome] = outcomes
    assert outcome.response_complete is True
    assert outcome.client_disconnected is False
