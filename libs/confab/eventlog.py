"""Appending to and reading from the event log, with optimistic concurrency.

The version of an aggregate is the stream sequence of the last event on its
subject. ``append`` stores an event only if that version is still the one the
decision was made on, and recognises a retried append that was in fact stored.

``EventLog`` is what the write side needs of a log, and nothing more: append
(with an expected version and a message id), read one subject in order, and
the last version of a subject. ``JetStreamLog`` is the real one (one stream);
``confab.memlog.MemoryLog`` keeps the same promises in memory for fast tests
of command handling. Both answer the same way: a stale expected version raises
``WrongExpectedVersion``; an append whose message id the log stored before
(within its duplicate window) stores nothing and answers ``duplicate`` with
the sequence stored then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from confab.contracts.events import Event
from confab.errors import Unavailable
from confab.events import H_MSG_ID, Envelope, encode, headers_for, open_envelope, parse_time

WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
READ_BATCH = 500  # events per round trip when reading a subject
EXPECTED_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"


class WrongExpectedVersion(Exception):
    """The aggregate moved on since it was loaded: reload, decide again."""

    def __init__(self, subject: str, expected: int) -> None:
        super().__init__(f"{subject} is no longer at version {expected}")
        self.subject = subject
        self.expected = expected


@dataclass(frozen=True, slots=True)
class Appended:
    seq: int
    duplicate: bool  # the same msg id was stored before; nothing new was written


async def append(
    js: JetStreamContext,
    stream: str,
    subject: str,
    event: Event,
    *,
    msg_id: str,
    workspace: str,
    actor: str = "",
    correlation: str = "",
    expected_version: int | None = None,
    attempts: int = 4,
    timeout: float = 5.0,
) -> Appended:
    """Append one event; raise ``WrongExpectedVersion`` if ``expected_version`` is stale.

    ``expected_version`` 0 means "the subject must be empty"; ``None`` skips
    the check. A publish whose acknowledgement was lost is retried with the
    same message id, which JetStream deduplicates.
    """
    headers = headers_for(
        event, msg_id=msg_id, workspace=workspace, actor=actor, correlation=correlation
    )
    if expected_version is not None:
        headers[EXPECTED_SUBJECT_SEQ] = str(expected_version)
    body = encode(event)
    for attempt in range(1, attempts + 1):
        try:
            ack = await js.publish(
                subject, body, stream=stream, headers=dict(headers), timeout=timeout
            )
            return Appended(seq=ack.seq, duplicate=bool(ack.duplicate))
        except APIError as exc:
            if exc.err_code not in WRONG_LAST_SEQUENCE:
                raise
            # A standalone server checks the expected sequence before dedup, so
            # a retry of a stored append lands here: recognise it by its msg id.
            stored = await _last_on_subject(js, stream, subject)
            if stored is not None and stored[1] == msg_id:
                return Appended(seq=stored[0], duplicate=True)
            raise WrongExpectedVersion(subject, expected_version or 0) from None
        except TimeoutError as exc:
            if attempt == attempts:
                raise Unavailable("The event log did not acknowledge the write in time.") from exc
        except NoStreamResponseError as exc:
            # No stream leader (a cluster electing one after a node died): wait a little.
            if attempt == attempts:
                raise Unavailable("The event log has no leader right now; try again.") from exc
            await asyncio.sleep(0.25 * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


async def _last_on_subject(
    js: JetStreamContext, stream: str, subject: str
) -> tuple[int, str] | None:
    try:
        # Not direct: direct gets may be served by a lagging replica.
        msg = await js.get_last_msg(stream, subject, direct=False)
    except NotFoundError:
        return None
    return msg.seq or 0, (msg.headers or {}).get(H_MSG_ID, "")


async def last_version(js: JetStreamContext, stream: str, subject: str) -> int:
    stored = await _last_on_subject(js, stream, subject)
    return stored[0] if stored else 0


async def read_subject(
    nc: NATS,
    stream: str,
    subject: str,
    after: int = 0,
    *,
    batch: int = READ_BATCH,
    timeout: float = 5.0,
) -> AsyncIterator[Envelope]:
    """Yield the events on ``subject`` with stream sequence > ``after``, in order.

    Uses batched direct get (nats-server 2.11+): one round trip per ``batch``
    events, no consumer created on the server.
    """
    start = after + 1
    while True:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        try:
            request = {"seq": start, "next_by_subj": subject, "batch": batch}
            await nc.publish(
                f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=inbox
            )
            pending = 0
            last = start - 1
            while True:
                msg = await sub.next_msg(timeout=timeout)
                headers = msg.headers or {}
                status = headers.get("Status")
                if status == "404":
                    return
                if status == "204":  # end of batch
                    pending = int(headers.get("Nats-Num-Pending", "0") or 0)
                    break
                if status:
                    raise Unavailable(f"Reading {subject} failed: status {status}.")
                last = int(headers["Nats-Sequence"])
                yield open_envelope(
                    headers,
                    msg.data,
                    subject=headers.get("Nats-Subject", subject),
                    seq=last,
                    time=parse_time(headers.get("Nats-Time-Stamp")),
                )
        finally:
            await sub.unsubscribe()
        if pending <= 0:
            return
        start = last + 1


class EventLog(Protocol):
    """One stream of the event log, as the write side uses it."""

    stream: str

    async def append(
        self,
        subject: str,
        event: Event,
        *,
        msg_id: str,
        workspace: str,
        actor: str = "",
        correlation: str = "",
        expected_version: int | None = None,
    ) -> Appended:
        """Store ``event`` on ``subject``; ``expected_version`` as in ``append``."""
        ...

    def read(self, subject: str, after: int = 0, limit: int = 0) -> AsyncIterator[Envelope]:
        """The events of ``subject`` with stream sequence > ``after``, in order; at most
        ``limit`` of them (0: all)."""
        ...

    async def last_version(self, subject: str) -> int:
        """The stream sequence of the last event on ``subject`` (0: none)."""
        ...


class JetStreamLog:
    """``EventLog`` over one JetStream stream (the functions above, bound to it)."""

    def __init__(self, nc: NATS, js: JetStreamContext, stream: str) -> None:
        self.nc = nc
        self.js = js
        self.stream = stream

    async def append(self, subject: str, event: Event, **options: Any) -> Appended:
        """``append`` to this stream; ``options`` as ``EventLog.append``'s."""
        return await append(self.js, self.stream, subject, event, **options)

    async def read(self, subject: str, after: int = 0, limit: int = 0) -> AsyncIterator[Envelope]:
        batch = min(limit, READ_BATCH) if limit > 0 else READ_BATCH
        count = 0
        events = read_subject(self.nc, self.stream, subject, after, batch=batch)
        async with contextlib.aclosing(events):
            async for envelope in events:
                yield envelope
                count += 1
                if count == limit:
                    return

    async def last_version(self, subject: str) -> int:
        return await last_version(self.js, self.stream, subject)
