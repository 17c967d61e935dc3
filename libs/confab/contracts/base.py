"""Base classes for events and RPC messages, and the event type registry."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

# -- bounds every request shares: the gateway, OpenAPI and the services check the same ---

INT32_MAX = 2**31 - 1  # PostgreSQL integer
INT64_MAX = 2**63 - 1  # PostgreSQL bigint
PAGE_MAX = 100  # the most items one page of any list holds
# A conversation's own counter (messages, reads, history cursors); the read models keep it
# as an integer, so a larger one cannot exist.
Seq = Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)]
# A JetStream stream sequence (min_seq, the report queue's cursor); kept as a bigint.
StreamSeq = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=PAGE_MAX)]
# next_cursor of lists ordered by a time and an id (``confab.cursors``): "<microseconds>:<id>",
# a time before the year 5000, so that it converts.
TimeCursor = Annotated[
    str, msgspec.Meta(max_length=82, pattern=r"^[0-9]{1,17}:[A-Za-z0-9_-]{1,64}$")
]


class Event(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A past-tense fact stored in a JetStream stream.

    Subclasses set ``type`` (e.g. ``"workspace.created"``) and ``schema`` (its
    integer version). Registering happens on subclassing, so importing a
    contracts module is enough for ``decode`` to know its events.
    """

    type: ClassVar[str]
    schema: ClassVar[int] = 1
    # Personal data (see confab.personal): these fields are sealed with the key of the
    # user named by the field ``owner``; such a class also has ``sealed: str | None``.
    personal: ClassVar[tuple[str, ...]] = ()
    owner: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" in cls.__dict__:
            existing = EVENT_TYPES.get(cls.type)
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise TypeError(f"event type {cls.type!r} defined twice")
            EVENT_TYPES[cls.type] = cls


EVENT_TYPES: dict[str, type[Event]] = {}


class Request(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """An RPC command or query. ``subject`` is where its handler listens; ``reply`` its answer."""

    subject: ClassVar[str]
    reply: ClassVar[type[msgspec.Struct]]


class Reply(msgspec.Struct, kw_only=True, frozen=True):
    """Base class of RPC replies."""


class Ok(Reply, kw_only=True, frozen=True):
    """The reply of a command that has nothing to say but its stream sequence."""

    seq: int = 0
