"""Reading a stream (or part of it) in order, in batches, with constant memory.

Replays, exports and tails read through an ephemeral pull consumer that
acknowledges nothing (``AckPolicy.NONE``) and lives in memory on the server:
nothing is left behind if the reader dies (it expires after
``INACTIVE_SECONDS``), and the stream is never loaded whole — at most
``prefetch`` batches wait in this process. In a pull consumer nothing is sent
that was not asked for, so nothing can be dropped on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

INACTIVE_SECONDS = 60.0


@dataclass(frozen=True)
class Start:
    """Where reading starts: a sequence, a time, only new events, or the beginning."""

    seq: int = 0
    time: datetime | None = None
    new_only: bool = False

    def config(self) -> dict[str, Any]:
        if self.new_only:
            return {"deliver_policy": DeliverPolicy.NEW}
        if self.time is not None:
            return {
                "deliver_policy": DeliverPolicy.BY_START_TIME,
                "opt_start_time": _rfc3339(self.time),
            }
        if self.seq > 1:
            return {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": self.seq}
        return {"deliver_policy": DeliverPolicy.ALL}


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``10m``, ``2h``, ``1d``, ``30s`` ago, or an ISO 8601 time (UTC unless it says)."""
    now = now or datetime.now(UTC)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip()
    if raw and raw[-1] in units and raw[:-1].replace(".", "", 1).isdigit():
        return now - timedelta(seconds=float(raw[:-1]) * units[raw[-1]])
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time or a duration like 10m: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def position(msg: Msg) -> tuple[int, int, int]:
    """(stream sequence, messages pending after it, time in ns) from a consumer's delivery.

    Read straight from the reply subject (``$JS.ACK.<stream>.<consumer>.<delivered>.
    <sseq>.<cseq>.<ns>.<pending>``, or its form with domain and account hash) instead
    of ``msg.metadata``, which costs a dataclass and a datetime per message.
    """
    tokens = (msg.reply or "").split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"not a JetStream delivery: {msg.reply!r}")
    at = 0 if len(tokens) == 9 else 2
    return int(tokens[5 + at]), int(tokens[8 + at]), int(tokens[7 + at])


_HEADER_NAME = re.compile(rb"[!-9;-~]*")


def _parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's header parser, without its per-character loop (a third of a replay's time).

    Same result for well-formed headers: ``Name: value`` lines, names without spaces
    or control characters; values stripped and decoded as UTF-8. A name seen before
    is looked up, not checked again (a stream's events carry the same few names).
    """
    out: dict[str, str] = {}
    names = _NAMES
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            key = names.get(name)
            if key is None:
                stripped = name.strip()
                if not _HEADER_NAME.fullmatch(stripped):
                    continue
                key = stripped.decode("ascii")
                if len(names) < _NAMES_KEPT:
                    names[name] = key
            out[key] = value.strip().decode("utf-8", "replace")
    return out


_NAMES: dict[bytes, str] = {}  # header names as they come (spaces and all) -> checked name
_NAMES_KEPT = 1024


def speed_up(nc: NATS) -> None:
    """Use the faster header parser on this connection (a replay's own connection)."""
    nc._parse_header_lines = _parse_header_lines  # type: ignore[method-assign]


class StreamReader:
    """One pass over ``stream`` (filtered by ``subjects``) from ``start``.

    ``pending`` is how many matching messages the stream held past ``start``
    when the reader opened. ``batches()`` yields lists of messages in stream
    order until the reader has caught up with the stream (or passed
    ``until``), or, with ``follow``, forever.

    It pulls with plain NATS requests (one outstanding pull of ``batch``
    messages, answered into a callback) rather than nats-py's ``fetch``, which
    costs a timer per message; at most ``prefetch`` batches wait here.
    """

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        subjects: Sequence[str] = (),
        start: Start = Start(),
        *,
        batch: int = 500,
        prefetch: int = 2,
    ) -> None:
        self.js = js
        self.nc: NATS = js._nc
        self.stream = stream
        self.subjects = list(subjects)
        self.start = start
        self.batch = batch
        self.prefetch = prefetch
        self.pending = 0
        self._name: str | None = None
        self._sub: Any = None
        self._queue: asyncio.Queue[list[Msg] | BaseException | None] = asyncio.Queue(prefetch)
        self._current: list[Msg] = []
        self._received = 0  # in answer to the pull in flight
        self._follow = False
        self._poll = 1.0
        self._until: int | None = None
        self._finished = False

    async def __aenter__(self) -> StreamReader:
        await self.open()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            inactive_threshold=INACTIVE_SECONDS,
            mem_storage=True,
            num_replicas=1,
            **self.start.config(),
        )
        if len(self.subjects) == 1:
            config.filter_subject = self.subjects[0]
        elif self.subjects:
            config.filter_subjects = self.subjects
        info = await self.js.add_consumer(self.stream, config)
        self._name = info.name
        self.pending = int(info.num_pending or 0)

    async def close(self) -> None:
        self._finished = True
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._name is not None:
            with contextlib.suppress(NotFoundError, Exception):
                await self.js.delete_consumer(self.stream, self._name)
            self._name = None

    async def batches(
        self, *, until: int | None = None, follow: bool = False, poll: float = 1.0
    ) -> AsyncIterator[list[Msg]]:
        """Batches in order; ``until``: stop after this stream sequence (it is included).

        Without ``follow``, a wait of more than 30 s for the next batch is an error.
        """
        if not follow and (self.pending == 0 or (until is not None and until < self.start.seq)):
            return
        self._follow, self._poll, self._until = follow, poll, until
        inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(
            inbox,
            cb=self._on_message,
            pending_msgs_limit=self.batch * 2 + 16,
            pending_bytes_limit=256 * 1024 * 1024,
        )
        self._inbox = inbox
        await self._pull()
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), None if follow else 30.0)
            except TimeoutError:
                raise TimeoutError(f"{self.stream}: the stream stopped delivering") from None
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def _pull(self) -> None:
        assert self._name is not None
        request: dict[str, Any] = {"batch": self.batch}
        if self._follow:
            request["expires"] = int(self._poll * 1_000_000_000)
        else:
            request["no_wait"] = True
        self._received = 0
        await self.nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self._name}",
            json.dumps(request).encode(),
            reply=self._inbox,
        )

    async def _on_message(self, msg: Msg) -> None:
        if self._finished:
            return
        try:
            if not msg.data and msg.headers and "Status" in msg.headers:
                status = msg.headers["Status"]
                if status in ("404", "408"):  # nothing (more) for now / the pull expired
                    await self._end_of_pull(caught_up=status == "404")
                    return
                if status == "100":
                    return
                raise ConnectionError(
                    f"{self.stream}: pull failed: {status} {msg.headers.get('Description', '')}"
                )
            seq, pending, _ = position(msg)
            if self._until is not None and seq > self._until:
                await self._finish()
                return
            self._current.append(msg)
            self._received += 1
            if (self._until is not None and seq >= self._until) or (
                pending == 0 and not self._follow
            ):
                await self._finish()
            elif self._received >= self.batch:
                await self._end_of_pull(caught_up=False)
        except Exception as exc:
            self._finished = True
            await self._queue.put(exc)

    async def _end_of_pull(self, *, caught_up: bool) -> None:
        if caught_up and not self._follow:
            await self._finish()
            return
        if self._current:
            batch, self._current = self._current, []
            await self._queue.put(batch)
        if not self._finished:
            await self._pull()

    async def _finish(self) -> None:
        self._finished = True
        if self._current:
            batch, self._current = self._current, []
            await self._queue.put(batch)
        await self._queue.put(None)


async def stream_names(js: JetStreamContext) -> list[str]:
    return sorted(info.config.name for info in await js.streams_info() if info.config.name)
