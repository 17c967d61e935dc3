"""Handler plumbing that needs no backend: unexpected failures are typed and logged safely."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from confab.contracts.identity import AuthenticateApiKey
from confab.errors import InternalError, NotFound, Unavailable
from confab.rpc import CallContext
from confab_identity.handlers import _guarded

SECRET = "sk_do-not-log-me"
REQUEST = AuthenticateApiKey(prefix=SECRET[:15], key_hash="hash-do-not-log-me")


async def test_an_unexpected_error_is_internal_and_logged_without_message_or_locals() -> None:
    async def broken(request: Any, ctx: CallContext) -> Any:
        token = SECRET  # a local a traceback renderer might show
        raise RuntimeError(f"boom with {token} and {request.key_hash}")

    with capture_logs() as logs, pytest.raises(InternalError) as caught:
        await _guarded(broken)(REQUEST, CallContext())
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert [entry["event"] for entry in logs] == ["identity_handler_failed"]
    text = repr(logs)
    assert "RuntimeError" in text and "broken" in text
    assert "do-not-log-me" not in text


async def test_backend_failures_are_unavailable_and_typed_errors_pass_through() -> None:
    async def db_down(_request: Any, _ctx: CallContext) -> Any:
        raise ConnectionRefusedError("connection refused")

    async def not_found(_request: Any, _ctx: CallContext) -> Any:
        raise NotFound("User not found.")

    with pytest.raises(Unavailable):
        await _guarded(db_down)(REQUEST, CallContext())
    with capture_logs() as logs, pytest.raises(NotFound):
        await _guarded(not_found)(REQUEST, CallContext())
    assert logs == []
