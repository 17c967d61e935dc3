import time
import uuid

import pytest
from nats.aio.client import Client as NATS
from structlog.testing import capture_logs

from confab.contracts.base import Reply, Request
from confab.errors import InternalError, InvalidRequest, NotFound, Unavailable
from confab.rpc import CallContext, RpcClient, RpcServer, typed_failure


class Greeting(Reply, kw_only=True, frozen=True):
    text: str


class Greet(Request, kw_only=True, frozen=True):
    subject = "test.q.greet"
    reply = Greeting
    name: str


async def test_a_call_returns_the_typed_reply_or_the_typed_error(nc: NATS) -> None:
    subject = f"test{uuid.uuid4().hex[:8]}.q.greet"
    server = RpcServer(nc, "test")

    async def greet(request: Greet, ctx: CallContext) -> Greeting:
        if request.name == "nobody":
            raise NotFound("No such person.", {"name": "nobody"})
        return Greeting(text=f"hello {request.name} ({ctx.correlation})")

    await server.serve(Greet, greet, subject=subject)
    client = RpcClient(nc)
    reply = await client.call(Greet(name="ann"), subject=subject, correlation="c-1")
    assert reply == Greeting(text="hello ann (c-1)")
    with pytest.raises(NotFound) as caught:
        await client.call(Greet(name="nobody"), subject=subject)
    assert (caught.value.message, caught.value.details) == ("No such person.", {"name": "nobody"})
    await server.stop()


async def test_a_malformed_request_is_an_invalid_request(nc: NATS) -> None:
    subject = f"test{uuid.uuid4().hex[:8]}.q.greet"
    server = RpcServer(nc, "test")

    async def greet(request: Greet, ctx: CallContext) -> Greeting:
        return Greeting(text="unreachable")

    await server.serve(Greet, greet, subject=subject)
    msg = await nc.request(subject, b'{"name": 5}', timeout=5)
    assert msg.headers["Confab-Error"] == InvalidRequest.code
    await server.stop()


async def test_a_service_that_is_not_running_is_unavailable_at_once(nc: NATS) -> None:
    client = RpcClient(nc, timeout=30)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="not running"):
        await client.call(Greet(name="x"), subject=f"nobody{uuid.uuid4().hex[:8]}.q.greet")
    # "No responders" answers at once; it must not wait for the 30 s deadline.
    assert time.monotonic() - started < 10


SECRET = "sk_do-not-log-me"


def test_an_unexpected_error_is_internal_and_logged_without_message_or_locals() -> None:
    def broken() -> None:
        token = SECRET  # a local a traceback renderer might show
        raise RuntimeError(f"boom with {token}")

    with capture_logs() as logs:
        try:
            broken()
        except RuntimeError as exc:
            error = typed_failure(exc, "identity", "identity.q.authenticate_api_key")
    assert isinstance(error, InternalError)
    assert [entry["event"] for entry in logs] == ["rpc_handler_failed"]
    text = repr(logs)
    assert "RuntimeError" in text and "broken" in text
    assert "do-not-log-me" not in text


async def test_a_backend_failure_is_unavailable_to_the_caller(nc: NATS) -> None:
    subject = f"test{uuid.uuid4().hex[:8]}.q.greet"
    server = RpcServer(nc, "test")

    async def db_down(request: Greet, ctx: CallContext) -> Greeting:
        raise ConnectionRefusedError(f"connection refused for {SECRET}")

    await server.serve(Greet, db_down, subject=subject)
    with capture_logs() as logs, pytest.raises(Unavailable, match="cannot reach its stores"):
        await RpcClient(nc).call(Greet(name="x"), subject=subject)
    assert "do-not-log-me" not in repr(logs)
    await server.stop()
