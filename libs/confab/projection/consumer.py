"""The JetStream side of a projection: a durable pull consumer made afresh where the
database says, and its messages opened as envelopes.

The database checkpoints are the truth; the consumer only says where to resume.
Every process reads the whole stream through a consumer of its own (one named
per member when the projection is partitioned) and applies the events of the
partitions it owns; the database work, which is most of the cost, is what gets
shared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from confab.events import Envelope, UnknownEvent, open_envelope
from confab.logging import get_logger
from confab.projection.base import Projection
from confab.streamread import position

log = get_logger("confab.projection")


def consumer_name(projection: str) -> str:
    return "proj_" + projection.replace(".", "_")


def durable_name(projection: Projection, member: int) -> str:
    """This process's consumer: one per projection, or one per member when partitioned."""
    name = consumer_name(projection.name)
    return name if projection.partitions == 1 else f"{name}_{member:08x}"


class Source(Protocol):
    """What a consumer reads: a stream and subjects of it (a ``Projection`` is one)."""

    @property
    def stream(self) -> str: ...

    @property
    def subjects(self) -> Sequence[str]: ...


async def subscribe_from(
    js: JetStreamContext, source: Source, durable: str, start: int, batch_size: int
) -> Any:
    """Bind to the durable consumer ``durable``, deleted and made again at sequence ``start``.

    Made afresh, not moved: events a dead process had fetched but not applied
    must come again, and an acknowledge-all from this one would otherwise cover them.
    """
    p = source
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(p.stream, durable)
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.ALL,
        ack_wait=30,
        max_deliver=-1,
        max_ack_pending=batch_size * 4,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
        opt_start_seq=start if start > 1 else None,
        filter_subjects=list(p.subjects),
        # A process that dies leaves its consumer behind; the server removes it.
        inactive_threshold=300.0,
    )
    await js.add_consumer(p.stream, config)
    return await js.pull_subscribe_bind(durable=durable, stream=p.stream)


async def unsubscribe(psub: Any) -> None:
    with contextlib.suppress(Exception):
        await psub.unsubscribe()


Place = tuple[int, int, int]  # ``streamread.position``: stream sequence, pending, time in ns


def open_message(msg: Msg, place: Place | None = None) -> Envelope:
    """The envelope of a message from a JetStream consumer (raises on unknown events).
    Its place and time are read from the reply subject (``streamread.position``, or
    ``place`` if the caller has read it already), not ``msg.metadata``: two frozen
    dataclasses per message, in every runner of every service."""
    seq, _, ns = place or position(msg)
    return open_envelope(
        msg.headers or {},
        msg.data,
        subject=msg.subject,
        seq=seq,
        time=datetime.fromtimestamp(ns / 1e9, UTC),
    )


def open_or_skip(projection: str, msg: Msg, place: Place | None = None) -> Envelope | None:
    """The envelope of ``msg``, or None (logged) if it cannot be read: a projection never
    stops on one bad event."""
    try:
        return open_message(msg, place)
    except (UnknownEvent, KeyError, ValueError) as exc:
        log.error(
            "projection_skipped_event",
            projection=projection,
            seq=(place or position(msg))[0],
            error=str(exc),
        )
        return None
