"""What the webhooks service follows: its own stream into the endpoints read model, and
every domain stream into deliveries.

``EndpointsProjection`` keeps ``webhooks.endpoints`` from ``WEBHOOKS`` by the decider's
own fold (``domain.evolve``), so the read model and the write side cannot disagree. A
deleted endpoint's pending deliveries are cancelled in the same transaction.

``Intake`` (one per stream: ``CONVERSATIONS``, ``IDENTITY``, ``MEDIA``, ``NOTIFIER``)
turns each stored event an endpoint asked for into a delivery row, in the transaction
that moves its checkpoint: a crash anywhere queues each delivery exactly once. The
endpoints are read in that same transaction, so an endpoint whose creation has returned
gets every event stored after it (and none stored before: its ``since``). The work is
split into partitions by what orders it (a conversation, a user, an attachment): a
partition is applied by one copy at a time, and the same copy sends its deliveries, so
the deliveries of one conversation to one endpoint go out in order. Conversation events
are also folded into the views the renderer holds, and the timeline entry that fold
makes says what the event is as a webhook; an event of a conversation not held is
folded into an empty view just before it (``_scratch_entry``): the same entry, since an
entry's name and the references kept of it depend on the event alone.

A row's id is taken from the table's sequence before it is written. What can go out at
once is handed to the sender inside the transaction (``First.send_first``), and each
row is written once, with the outcome of its first attempt when it has one
(``delivery``'s note says why and what it keeps). The other rows are handed over once
their transaction has committed (``offer``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from confab import conversation, realtime
from confab.bus import CONVERSATIONS, IDENTITY, MEDIA, NOTIFIER, WEBHOOKS, StreamSpec
from confab.contracts.events.identity import UserBanned, UserErased, UserUnbanned, UserUpserted
from confab.contracts.events.media import AttachmentStored
from confab.contracts.events.messaging import (
    ConversationCreated,
    ConversationEvent,
    MessageReported,
)
from confab.contracts.events.notifier import NotificationDue
from confab.contracts.events.webhooks import WebhookDeleted, WebhookEvent
from confab.contracts.webhooks import EVENT_TYPES, wants
from confab.conversation import ConversationView
from confab.events import Envelope
from confab.projection import Projection
from confab_webhooks import domain
from confab_webhooks.domain import EndpointState, Secret
from confab_webhooks.store import SCHEMA, define_tables

Offer = Callable[[list[dict[str, Any]]], None]
# Folds stored events into the renderer's views: the entries they made, by stream seq.
Take = Callable[[Sequence[Envelope]], Awaitable[dict[int, conversation.Entry]]]
Classify = Callable[[Envelope, conversation.Entry | None], "Found | None"]


class Attempts(Protocol):
    """A batch's deliveries sent before their rows are written (``delivery.FirstAttempts``)."""

    items: Any  # by id: what was sent first

    async def wait(self, seconds: float) -> None: ...
    def written(self) -> dict[int, tuple[Any, ...]]: ...  # by id: ``PER_OUTCOME``
    def forget(self, ids: Iterable[int] | None = None) -> None: ...


class First(Protocol):
    """The sender, as the intake hands it rows before they are written."""

    def send_first(self, rows: list[dict[str, Any]]) -> Attempts: ...


_DELIVERED = frozenset(EVENT_TYPES)
UNIQUE_VIOLATION = "23505"


# -- endpoints -----------------------------------------------------------------------------------


def state_of(row: dict[str, Any]) -> EndpointState:
    return EndpointState(
        id=row["id"],
        workspace_id=row["workspace_id"],
        url=row["url"],
        event_types=tuple(row["event_types"]),
        enabled=row["enabled"],
        description=row["description"],
        secrets=secrets_of(row["secrets"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        disabled_reason=row["disabled_reason"],
        deleted=row["deleted"],
    )


def secrets_of(raw: list[dict[str, Any]]) -> tuple[Secret, ...]:
    return tuple(
        Secret(s["value"], msgspec.convert(s["expires_at"], datetime) if s["expires_at"] else None)
        for s in raw
    )


def _row(state: EndpointState) -> dict[str, Any]:
    return {
        "url": state.url,
        "event_types": list(state.event_types),
        "enabled": state.enabled,
        "description": state.description,
        "disabled_reason": state.disabled_reason,
        "secrets": [
            {"value": s.value, "expires_at": s.expires_at.isoformat() if s.expires_at else None}
            for s in state.secrets
        ],
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "deleted": state.deleted,
    }


class EndpointsProjection(Projection):
    stream = WEBHOOKS.name
    subjects = WEBHOOKS.subjects

    def __init__(self, name: str = "webhooks.endpoints") -> None:
        self.name = name
        self.metadata = sa.MetaData(schema=SCHEMA)
        self.endpoints, self.deliveries, self.health = define_tables(self.metadata)
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        t = self.endpoints
        for envelope in events:
            event = envelope.event
            if not isinstance(event, WebhookEvent):
                continue
            found = (await conn.execute(sa.select(t).where(t.c.id == event.endpoint_id))).first()
            before = state_of(dict(found._mapping)) if found else None
            if found is not None and found.seq >= envelope.seq:
                continue
            after = domain.evolve(before, event)
            if after is None:
                continue
            values = {**_row(after), "seq": envelope.seq}
            if found is None:
                since = envelope.time or event.at
                await conn.execute(
                    insert(t)
                    .values(id=after.id, workspace_id=after.workspace_id, since=since, **values)
                    .on_conflict_do_nothing(index_elements=[t.c.id])
                )
            else:
                await conn.execute(t.update().where(t.c.id == after.id).values(**values))
            if isinstance(event, WebhookDeleted):
                d = self.deliveries
                await conn.execute(
                    d.update()
                    .where(d.c.endpoint_id == event.endpoint_id, d.c.status == "pending")
                    .values(status="cancelled", delivered_at=sa.func.now())
                )


# -- intake ----------------------------------------------------------------------------------------


class Found(msgspec.Struct, frozen=True):
    """A stored event as a webhook: its type, what orders it, and what rendering needs."""

    event_type: str
    lane: str
    ref: dict[str, Any]
    conversation_id: str | None = None
    event_seq: int | None = None


def _scratch_entry(event: ConversationEvent, stream_seq: int) -> conversation.Entry | None:
    """The timeline entry ``event`` makes (its references, never content): folded into an
    empty view that stands just before it."""
    view = ConversationView(event.conversation_id)
    if not isinstance(event, ConversationCreated):
        view.created_at = event.at
        view.last_seq = event.seq - 1
    return conversation.evolve(view, event, stream_seq)


def conversation_webhook(
    envelope: Envelope, folded: conversation.Entry | None = None
) -> Found | None:
    """``folded``: the entry the renderer's fold of a view it holds made of the event."""
    event = envelope.event
    if isinstance(event, MessageReported):
        ref = {
            "report_id": event.report_id,
            "message_id": event.message_id,
            "reporter_id": event.reporter_id,
            "reason": event.reason,
        }
        return Found("message.reported", event.conversation_id, ref, event.conversation_id)
    if not isinstance(event, ConversationEvent):
        return None
    entry = folded if folded is not None else _scratch_entry(event, envelope.seq)
    if entry is None or entry.name not in _DELIVERED:
        return None  # reactions are not webhook events
    ref = {**entry.data, "at": entry.at.isoformat()}
    if entry.name == realtime.MESSAGE_DELETED:
        ref = {"id": entry.data["id"], "at": ref["at"]}
    return Found(entry.name, event.conversation_id, ref, event.conversation_id, entry.seq)


def identity_webhook(envelope: Envelope, _: conversation.Entry | None = None) -> Found | None:
    event = envelope.event
    if isinstance(event, UserUpserted):
        kind = "user.created" if event.created else "user.updated"
    elif isinstance(event, UserBanned):
        kind = "user.banned"
    elif isinstance(event, UserUnbanned):
        kind = "user.updated"
    elif isinstance(event, UserErased):
        kind = "user.erased"
    else:
        return None
    return Found(kind, event.user_id, {"user_id": event.user_id})


def media_webhook(envelope: Envelope, _: conversation.Entry | None = None) -> Found | None:
    event = envelope.event
    if not isinstance(event, AttachmentStored):
        return None
    ref = {"attachment_id": event.attachment_id, "conversation_id": event.conversation_id}
    return Found("attachment.stored", event.attachment_id, ref)


def notifier_webhook(envelope: Envelope, _: conversation.Entry | None = None) -> Found | None:
    """The notifier's decision, as it decided it (references and counts, no content)."""
    event = envelope.event
    if not isinstance(event, NotificationDue):
        return None
    ref = msgspec.to_builtins(event)
    ref.pop("workspace_id", None)
    return Found("notification.due", event.user_id, ref)


SOURCES: dict[str, tuple[StreamSpec, Classify]] = {
    "conversations": (CONVERSATIONS, conversation_webhook),
    "identity": (IDENTITY, identity_webhook),
    "media": (MEDIA, media_webhook),
    "notifier": (NOTIFIER, notifier_webhook),
}


# What the intake writes of a delivery row: what an event gives every endpoint that
# wants it (sent once per event), what each delivery has of its own, its outcome so far
# (sent once per distinct outcome: most of a batch shares a few), and ``source``,
# ``stream`` (the intake's) and ``delivered_at`` (its attempt's time, if delivered).
# Every column but ``requeued`` (false).
PER_EVENT = (
    "workspace_id",
    "part",
    "lane",
    "seq",
    "event_type",
    "conversation_id",
    "event_seq",
    "ref",
    "stored_at",
)
PER_DELIVERY = ("id", "endpoint_id")
PER_OUTCOME = (
    "status",
    "attempts",
    "last_status",
    "last_error",
    "last_attempt_at",
    "next_attempt_at",
)
QUEUED = (*PER_DELIVERY, *PER_OUTCOME, *PER_EVENT, "source", "stream", "delivered_at")
# A row not attempted yet.
PENDING = {
    "status": "pending",
    "attempts": 0,
    "last_status": None,
    "last_error": None,
    "last_attempt_at": None,
    "next_attempt_at": None,
    "delivered_at": None,
    "requeued": False,
}
NOT_ATTEMPTED = tuple(PENDING[c] for c in PER_OUTCOME)
_JSON = msgspec.json.Encoder()


def _queue_statement(
    deliveries: sa.Table, endpoints: sa.Table, *, again: bool = True
) -> sa.TextClause:
    """``INSERT … SELECT`` of ``QUEUED`` from three ``unnest``s: the batch's deliveries
    (``PER_DELIVERY``, bound as ``d_<column>``, with ``d_event`` and ``d_outcome``: the
    1-based places of the delivery's event and outcome) joined to its events
    (``PER_EVENT``, bound as ``e_<column>``, each event once) and to its distinct
    outcomes (``PER_OUTCOME``, as ``o_<column>``). Each array is cast to its column's
    type; JSON arrives as text. Nothing is returned: the statement's row count says
    whether every row was written. With ``again``, rows queued before (``deliveries_once``)
    are skipped; without, they fail the statement. The intake writes without first
    (``Intake._write``): PostgreSQL's speculative insertion for ``ON CONFLICT`` cost it
    about 4 µs a row, a third of the insert, for a batch that is almost never applied
    twice.

    The driver encodes each array element on its own (0.4 µs for a number or a text, 0.8
    for a time): an event wanted by three endpoints was three rows of 20 values each; it
    is now 9 values once, and 4 per endpoint. A batch's outcomes are few: not attempted
    yet, or delivered at one of the few milliseconds its answers came in
    (``delivery.utcnow``).

    Rows of an endpoint deleted since the batch read the endpoints are not written: the
    deletion cancelled its pending rows before these existed, and nothing would ever
    send or cancel them (the batch can wait a second for first attempts in between).

    Not ``confab.db.BulkInsert``: that serialises each row's JSON through the column's
    bind processor, where ``ref`` is the same for every endpoint of an event and is
    encoded once (msgspec) by the intake; and it has no place for the guard above."""
    dialect = postgresql.dialect()

    def arrays(prefix: str, columns: tuple[str, ...]) -> str:
        typed = []
        for c in columns:
            t = deliveries.c[c].type.compile(dialect=dialect)
            cast = f"CAST(CAST(:{prefix}{c} AS TEXT[]) AS JSONB[])" if t == "JSONB" else None
            typed.append(cast or f"CAST(:{prefix}{c} AS {t}[])")
        return ", ".join(typed)

    values = {
        **{c: f"e.{c}" for c in PER_EVENT},
        **{c: f"d.{c}" for c in PER_DELIVERY},
        **{c: f"o.{c}" for c in PER_OUTCOME},
        "source": "CAST(:source AS TEXT)",
        "stream": "CAST(:stream AS TEXT)",
        "delivered_at": "CASE WHEN o.status = 'delivered' THEN o.last_attempt_at END",
    }
    table = dialect.identifier_preparer.format_table(deliveries)
    known = dialect.identifier_preparer.format_table(endpoints)
    return sa.text(
        f"INSERT INTO {table} ({', '.join(QUEUED)}) "
        f"SELECT {', '.join(values[c] for c in QUEUED)} "
        f"FROM unnest({arrays('d_', PER_DELIVERY)}, "
        "CAST(:d_event AS INTEGER[]), CAST(:d_outcome AS INTEGER[])) "
        f"AS d({', '.join(PER_DELIVERY)}, event, outcome) "
        f"JOIN unnest({arrays('e_', PER_EVENT)}) WITH ORDINALITY "
        f"AS e({', '.join(PER_EVENT)}, n) ON e.n = d.event "
        f"JOIN unnest({arrays('o_', PER_OUTCOME)}) WITH ORDINALITY "
        f"AS o({', '.join(PER_OUTCOME)}, n) ON o.n = d.outcome "
        f"WHERE NOT EXISTS (SELECT 1 FROM {known} k WHERE k.id = d.endpoint_id AND k.deleted)"
        + (" ON CONFLICT ON CONSTRAINT deliveries_once DO NOTHING" if again else "")
    )


async def _ids_statement(conn: AsyncConnection, deliveries: sa.Table) -> sa.TextClause:
    """``n`` ids from the deliveries' identity sequence, in order, as one array (one
    value to decode, not a row per id). The sequence is looked up here, once:
    ``pg_get_serial_sequence`` in the statement itself was evaluated for every id, and
    cost PostgreSQL four times what taking the ids did."""
    table = postgresql.dialect().identifier_preparer.format_table(deliveries)
    found = await conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table})
    sequence = str(found.scalar_one()).replace("'", "''")
    return sa.text(
        f"SELECT ARRAY(SELECT nextval('{sequence}'::regclass) "
        "FROM generate_series(1, :n) ORDER BY 1) AS ids"
    )


class Intake(Projection):
    """Stored events of one stream into delivery rows for the endpoints that want them."""

    def __init__(
        self,
        source: str,
        partitions: int,
        offer: Offer,
        take: Take | None = None,
        first: First | None = None,
        first_wait: float = 0.0,
    ) -> None:
        spec, self.classify = SOURCES[source]
        self.source = source
        self.name = f"webhooks.{source}"
        self.stream = spec.name
        self.subjects = spec.subjects
        self.partitions = partitions
        self.metadata = sa.MetaData(schema=SCHEMA)
        self.endpoints, self.deliveries, self.health = define_tables(self.metadata)
        self.offer = offer
        self.take = take
        self.first = first if first_wait > 0 else None
        self.first_wait = first_wait
        self._queued: list[dict[str, Any]] = []  # by the last apply, offered once committed
        self._sent: Attempts | None = None  # by the last apply, before its commit
        self._queue = _queue_statement(self.deliveries, self.endpoints, again=False)
        self._queue_again = _queue_statement(self.deliveries, self.endpoints)
        self._ids: sa.TextClause | None = None  # looked up at the first batch
        d = self.deliveries
        self._stored = sa.select(d.c.id).where(d.c.id.in_(sa.bindparam("ids", expanding=True)))
        super().__init__()

    def partition_key(self, subject: str) -> str:
        # conv.evt.<ws>.<conv>, identity.evt.<ws>.<kind>.<id>, media.evt.<ws>.<id>
        return subject.rsplit(".", 1)[-1]

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        self._queued, self._sent = [], None
        workspaces = sorted({e.workspace for e in events})
        e = self.endpoints
        rows = await conn.execute(
            sa.select(e.c.id, e.c.workspace_id, e.c.event_types, e.c.since).where(
                e.c.workspace_id.in_(workspaces), e.c.enabled.is_(True), e.c.deleted.is_(False)
            )
        )
        # Each endpoint with what it wants, by event type (matched once per batch).
        by_workspace: dict[str, list[tuple[Any, dict[str, bool]]]] = {}
        for row in rows.all():
            by_workspace.setdefault(row.workspace_id, []).append((row, {}))
        if not by_workspace:
            return
        interested = [x for x in events if x.workspace in by_workspace]
        folded = await self.take(interested) if self.take is not None else {}
        queued: list[dict[str, Any]] = []
        # Each event's own columns, once for all its endpoints (``PER_EVENT``); ``events_of``
        # gives each delivery its event's place there (1-based).
        per_event: dict[str, list[Any]] = {f"e_{c}": [] for c in PER_EVENT}
        event_columns = [(c, per_event[f"e_{c}"]) for c in PER_EVENT if c != "ref"]
        refs = per_event["e_ref"]  # as JSON text, encoded once per event
        events_of: list[int] = []
        for envelope in interested:
            found = self.classify(envelope, folded.get(envelope.seq))
            if found is None:
                continue
            stored_at = envelope.time or getattr(envelope.event, "at", None) or datetime.now(UTC)
            ref: Any = None
            part = self.partition_of(envelope.subject)
            kind = found.event_type
            for endpoint, wanted in by_workspace[envelope.workspace]:
                wanted_now = wanted.get(kind)
                if wanted_now is None:
                    wanted_now = wanted[kind] = wants(endpoint.event_types, kind)
                if not wanted_now or stored_at < endpoint.since:
                    continue
                if ref is None:
                    ref = msgspec.to_builtins(found.ref)  # as read back from JSON
                    refs.append(_JSON.encode(ref).decode())
                    row = {
                        "workspace_id": envelope.workspace,
                        "source": self.source,
                        "part": part,
                        "lane": found.lane,
                        "stream": self.stream,
                        "seq": envelope.seq,
                        "event_type": found.event_type,
                        "conversation_id": found.conversation_id,
                        "event_seq": found.event_seq,
                        "ref": ref,
                        "stored_at": stored_at,
                        **PENDING,
                    }
                    for column, values in event_columns:
                        values.append(row[column])
                events_of.append(len(refs))
                queued.append({**row, "endpoint_id": endpoint.id})
        if not queued:
            return
        if self._ids is None:
            self._ids = await _ids_statement(conn, self.deliveries)
        ids: list[int] = (await conn.execute(self._ids, {"n": len(queued)})).scalar_one()
        for row, row_id in zip(queued, ids, strict=True):
            row["id"] = row_id
        written: dict[int, tuple[Any, ...]] = {}
        if self.first is not None:
            self._sent = sent = self.first.send_first(queued)
            if sent.items:
                await sent.wait(self.first_wait)
                written = sent.written()
        # Each distinct outcome once (``PER_OUTCOME``), and each delivery's place in them.
        outcomes: dict[tuple[Any, ...], int] = {NOT_ATTEMPTED: 1}
        outcome_of: list[int] = []
        for row_id in ids:
            outcome = written.get(row_id, NOT_ATTEMPTED)
            place = outcomes.get(outcome)
            if place is None:
                place = outcomes[outcome] = len(outcomes) + 1
            outcome_of.append(place)
        # One statement over arrays (``unnest``): no per-row parameter binding, and no
        # JSON decoded back of what was just encoded.
        params: dict[str, Any] = {
            "d_id": ids,
            "d_endpoint_id": [r["endpoint_id"] for r in queued],
            "d_event": events_of,
            "d_outcome": outcome_of,
        }
        by_column = zip(*outcomes, strict=True)  # the outcomes in order of their places
        params.update({f"o_{c}": list(v) for c, v in zip(PER_OUTCOME, by_column, strict=True)})
        params.update(per_event, source=self.source, stream=self.stream)
        count = await self._write(conn, params)
        if count == len(queued):
            stored = {row["id"] for row in queued}
        else:
            # Queued before (a checkpoint that went back: sent once more), or the endpoint
            # was deleted meanwhile: never again.
            stored = set((await conn.execute(self._stored, {"ids": ids})).scalars().all())
            if self._sent is not None:
                self._sent.forget([i for i in written if i not in stored])
        self._queued = [q for q in queued if q["id"] in stored and q["id"] not in written]

    async def _write(self, conn: AsyncConnection, params: dict[str, Any]) -> int:
        """Write the batch's rows; how many were written. Plainly first, in a savepoint;
        only if some were queued before (a checkpoint that went back) again, skipping
        those."""
        try:
            async with conn.begin_nested():
                return int((await conn.execute(self._queue, params)).rowcount)
        except IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", None) != UNIQUE_VIOLATION:
                raise
        return int((await conn.execute(self._queue_again, params)).rowcount)

    def committed(self) -> None:
        """Only rows that are stored go out: a batch rolled back is applied again, and its
        rows would otherwise be sent under ids that never existed, then once more."""
        self._sent = None
        if self._queued:
            self.offer(self._queued)
            self._queued = []

    def rolled_back(self) -> None:
        """What was sent before the rows were written is forgotten (the batch is applied,
        and sent, again): nothing of it is retried or recorded under ids never written."""
        if self._sent is not None:
            self._sent.forget()
            self._sent = None
        self._queued = []
