"""What identity's two sides share, and its routes.

``commands`` (the write side: one decider per aggregate kind, run by the
command shell) and ``queries`` (the read side: the read model) each list
their handlers; ``routes`` puts them together for the RPC server.

Nothing secret reaches a log line: handlers log ids only, and an unexpected
failure is logged (by ``confab.rpc``) as its type and code locations, never
its message or the frames' local variables (which hold tokens, keys and
hashes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from confab.contracts.base import Request
from confab.errors import NotFound
from confab.ids import is_valid_id
from confab.rpc import CallContext

Handler = Callable[[Any, CallContext], Awaitable[Any]]


def utcnow() -> datetime:
    return datetime.now(UTC)


def valid(value: str, what: str) -> str:
    """An id from a request, checked before it goes into a subject; NotFound if malformed."""
    if not is_valid_id(value):
        raise NotFound(f"{what} not found.")
    return value


def routes(*sides: Any) -> list[tuple[type[Request], Handler]]:
    """Every request of the given sides (``Commands``, ``Queries``) with its handler."""
    return [route for side in sides for route in side.routes()]
