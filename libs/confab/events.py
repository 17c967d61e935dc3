"""The event envelope: JetStream headers, msgspec encoding, and upcasting old versions.

On the wire an event is a JSON body plus headers. ``Confab-Schema`` says which
version of the type wrote it; older versions are upcast on read, one function
per version step, and never rewritten in the log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from confab.contracts.events import EVENT_TYPES, Event

H_MSG_ID = "Nats-Msg-Id"
H_EVENT = "Confab-Event"
H_SCHEMA = "Confab-Schema"
H_WORKSPACE = "Confab-Workspace"
H_ACTOR = "Confab-Actor"
H_CORRELATION = "Confab-Correlation"

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}
_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type[Event], msgspec.json.Decoder[Any]] = {}
_RAW = msgspec.json.Decoder(dict[str, Any])


class UnknownEvent(Exception):
    """An event type this build does not know; projections skip it with a warning."""


class Envelope(msgspec.Struct, kw_only=True, frozen=True):
    """A decoded event with everything the log says about it."""

    event: Event
    type: str
    schema: int
    msg_id: str
    workspace: str
    actor: str
    correlation: str
    subject: str = ""
    seq: int = 0
    subject_seq: int = 0  # the previous sequence on this subject (0 for the first)
    time: datetime | None = None

    @classmethod
    def of(cls, event: Event, *, workspace: str, subject: str, seq: int) -> Envelope:
        """``event`` as a reader would get it back from the log at ``seq``, for folding
        events made by hand (tests): no actor or correlation, ``m{seq}`` as its id."""
        return cls(
            event=event,
            type=event.type,
            schema=event.schema,
            msg_id=f"m{seq}",
            workspace=workspace,
            actor="",
            correlation="",
            subject=subject,
            seq=seq,
        )


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register ``fn`` to turn version ``from_version`` of ``event_type`` into the next one."""

    def register(fn: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in _UPCASTERS:
            raise ValueError(f"an upcaster for {event_type} v{from_version} exists already")
        _UPCASTERS[key] = fn
        return fn

    return register


def headers_for(
    event: Event, *, msg_id: str, workspace: str, actor: str = "", correlation: str = ""
) -> dict[str, str]:
    return {
        H_MSG_ID: msg_id,
        H_EVENT: event.type,
        H_SCHEMA: str(event.schema),
        H_WORKSPACE: workspace,
        H_ACTOR: actor,
        H_CORRELATION: correlation or msg_id,
    }


def encode(event: Event) -> bytes:
    return _ENCODER.encode(event)


def decode_event(event_type: str, schema: int, data: bytes) -> Event:
    """Decode a body of ``event_type`` written at version ``schema``, upcasting if it is old."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise UnknownEvent(event_type)
    if schema == cls.schema:
        decoder = _DECODERS.get(cls)
        if decoder is None:
            decoder = _DECODERS[cls] = msgspec.json.Decoder(cls)
        return decoder.decode(data)
    if schema > cls.schema:
        raise UnknownEvent(f"{event_type} v{schema} is newer than this build (v{cls.schema})")
    body = _RAW.decode(data)
    for version in range(schema, cls.schema):
        step = _UPCASTERS.get((event_type, version))
        if step is None:
            raise UnknownEvent(f"no upcaster from {event_type} v{version} to v{version + 1}")
        body = step(body)
    return msgspec.convert(body, cls)


def parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    # nats-server writes RFC 3339 with nanoseconds; Python takes microseconds.
    head, _, frac = raw.rstrip("Z").partition(".")
    text = f"{head}.{frac[:6]}" if frac else head
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def open_envelope(
    headers: Mapping[str, str],
    data: bytes,
    *,
    subject: str = "",
    seq: int = 0,
    subject_seq: int = 0,
    time: datetime | None = None,
) -> Envelope:
    event_type = headers[H_EVENT]
    schema = int(headers.get(H_SCHEMA, "1"))
    return Envelope(
        event=decode_event(event_type, schema, data),
        type=event_type,
        schema=schema,
        msg_id=headers.get(H_MSG_ID, ""),
        workspace=headers.get(H_WORKSPACE, ""),
        actor=headers.get(H_ACTOR, ""),
        correlation=headers.get(H_CORRELATION, ""),
        subject=subject,
        seq=seq,
        subject_seq=subject_seq,
        time=time,
    )
