"""What identity's two sides share: the clock, and the check of ids from requests.

``commands`` (the write side: one decider per aggregate kind, run by the
command shell) and ``queries`` (the read side: the read model) each list
their handlers; ``app`` serves both (``confab.shell.routes``).

Nothing secret reaches a log line: handlers log ids only, and an unexpected
failure is logged (by ``confab.rpc``) as its type and code locations, never
its message or the frames' local variables (which hold tokens, keys and
hashes).
"""

from __future__ import annotations

from datetime import UTC, datetime

from confab.errors import NotFound
from confab.ids import is_valid_id


def utcnow() -> datetime:
    return datetime.now(UTC)


def valid(value: str, what: str) -> str:
    """An id from a request, checked before it goes into a subject; NotFound if malformed."""
    if not is_valid_id(value):
        raise NotFound(f"{what} not found.")
    return value
