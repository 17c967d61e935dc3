"""The support read model, projected from ``CONVERSATIONS`` by the staff fold.

A batch loads the ``support_conversations`` rows of the conversations it
touches (one query), folds every event into them with ``confab.support.evolve``
(the fold every staff reader shares; events of conversations that are not
support conversations change nothing), and writes the changed rows back with
one upsert, guarded by the stream sequence, so a replay into empty tables gives
the same rows however the stream is cut into batches. Notes are revealed with
their author's key (``confab.personal``) and inserted once; an erased author's
notes read blank on a rebuild, and are blanked in place by ``blank_notes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from confab import support
from confab.bus import CONVERSATIONS
from confab.contracts.events.messaging import ConversationCreated, ConversationEvent, NoteAdded
from confab.events import Envelope
from confab.personal import KeyRing
from confab.projection import Projection
from confab.support import SupportView
from confab_messaging.store import SCHEMA
from confab_messaging.support_store import SupportTables, define_support_tables


def _workspace_of(subject: str) -> str:
    parts = subject.split(".")  # conv.evt.<workspace>.<conversation>
    return parts[2] if len(parts) == 4 else ""


class SupportProjection(Projection):
    stream = CONVERSATIONS.name
    subjects = CONVERSATIONS.subjects
    partitions = 16  # as the conversations read model: a conversation is one key

    def __init__(
        self, name: str = "messaging.support", schema: str = SCHEMA, keys: KeyRing | None = None
    ) -> None:
        self.name = name
        self.metadata = sa.MetaData(schema=schema)
        self.tables: SupportTables = define_support_tables(self.metadata)
        self.keys = keys
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        s = self.tables.support
        ids = {e.event.conversation_id for e in events if isinstance(e.event, ConversationEvent)}
        if not ids:
            return
        loaded = await conn.execute(sa.select(s).where(s.c.id.in_(sorted(ids))))
        views = {r.id: SupportView.from_row(r._mapping) for r in loaded}
        if not views and not any(
            isinstance(e.event, ConversationCreated) and e.event.kind == support.SUPPORT
            for e in events
        ):
            return  # nothing here concerns a support conversation
        if self.keys is not None and any(isinstance(e.event, NoteAdded) for e in events):
            events = await self.keys.reveal_all(events)
        dirty: set[str] = set()
        notes: list[dict[str, Any]] = []
        for envelope in events:
            event = envelope.event
            if not isinstance(event, ConversationEvent):
                continue
            cid = event.conversation_id
            view = views.get(cid)
            if view is None:
                if not (isinstance(event, ConversationCreated) and event.kind == support.SUPPORT):
                    continue
                view = views[cid] = SupportView(cid, _workspace_of(envelope.subject))
            before = view.stream_seq
            change = support.evolve(view, event, envelope.seq)
            if view.stream_seq != before:
                # Folded, even without a change the inbox shows (an agent joining): the row
                # must say so whatever batch the event came in, or a rebuild differs.
                dirty.add(cid)
            if change is None:
                continue
            if change.note is not None:
                note = change.note
                notes.append(
                    {
                        "id": note.note_id,
                        "workspace_id": view.workspace_id,
                        "conversation_id": cid,
                        "author_id": note.author_id,
                        "content": note.content,
                        "created_at": note.at,
                        "stream_seq": envelope.seq,
                    }
                )
        if dirty:
            stmt = insert(s)
            columns = [c for c in SupportView.__slots__ if c not in ("id", "workspace_id")]
            stmt = stmt.on_conflict_do_update(
                index_elements=[s.c.id],
                set_={c: stmt.excluded[c] for c in columns},
                where=s.c.stream_seq < stmt.excluded.stream_seq,
            )
            await conn.execute(stmt, [views[i].row() for i in sorted(dirty)])
        if notes:
            await conn.execute(insert(self.tables.notes).on_conflict_do_nothing(), notes)


async def blank_notes(conn: AsyncConnection, user_ids: Sequence[str], schema: str = SCHEMA) -> None:
    """What erasure leaves of erased staff members' notes: no content. (A read model built
    without the support projection has no notes table: nothing to blank. A rebuild reads
    an erased author's notes blank anyway: their key is gone.)"""
    found = await conn.execute(sa.select(sa.func.to_regclass(f"{schema}.notes")))
    if found.scalar() is None:
        return
    notes = sa.table(
        "notes", sa.column("author_id", sa.Text), sa.column("content", sa.Text), schema=schema
    )
    blanked = notes.update().where(notes.c.author_id.in_(list(user_ids)))
    await conn.execute(blanked.values(content=""))
