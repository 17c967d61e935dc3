"""Schema evolution: events written as version 1 stay in the log as they are; after version 2
and its upcaster arrive, the projections, the write side, the queries and a replay read both.

The change made here is the kind that needs a new version (see docs/events.md, "Versions"):
``message.posted`` version 1 is taken to have called the text ``text`` and its author
``sender``; version 2 is today's struct. The v1 events are written as an older build wrote
them. The test runs the messaging service in this process, on a NATS server of its own, so
nothing it writes reaches other tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from confab import events
from confab.bus import CONVERSATIONS, IDENTITY, ensure_streams
from confab.contracts.events import identity
from confab.contracts.events.messaging import MessagePosted, subject
from confab.contracts.messaging import (
    Actor,
    ConversationInput,
    CreateConversation,
    ListMessages,
    MessageInput,
    PostMessage,
)
from confab.eventlog import append, last_version, read_subject
from confab.ids import new_id
from confab.readmodels import find
from confab.rebuild import Progress, ReadModelRebuild
from confab.rpc import RpcClient
from confab.service import Service
from confab_infra.nats import EmbeddedNats
from confab_messaging import app
from confab_messaging.settings import MessagingSettings
from confab_messaging.store import TABLES


def posted_v1_to_v2(body: dict[str, Any]) -> dict[str, Any]:
    """``message.posted`` v1 -> v2: ``text`` became ``content``, ``sender`` ``sender_id``."""
    out = dict(body)
    if "text" in out:
        out["content"] = out.pop("text")
    if "sender" in out:
        out["sender_id"] = out.pop("sender")
    return out


@pytest.fixture
def version_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the contracts module would say: ``schema = 2`` on the struct and
    ``@upcaster("message.posted", 1)`` on the function above (undone after the test)."""
    monkeypatch.setattr(MessagePosted, "schema", 2)
    monkeypatch.setitem(events._UPCASTERS, ("message.posted", 1), posted_v1_to_v2)


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[str]:
    server = EmbeddedNats(tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()


async def test_v1_events_and_v2_events_are_read_side_by_side(
    version_2: None, own_nats: str, fresh_database_url: str
) -> None:
    settings = MessagingSettings(
        nats_url=own_nats, database_url=fresh_database_url, instance="evolution"
    )
    service = Service("messaging", settings)
    await service.start()
    try:
        await ensure_streams(service.js, [IDENTITY, CONVERSATIONS])
        await app.setup(service)
        call = RpcClient(service.nc, timeout=15.0).call
        ws = new_id("ws")
        ann, bob = new_id("usr"), new_id("usr")
        for user_id, name in ((ann, "Ann"), (bob, "Bob")):
            await append(
                service.js,
                IDENTITY.name,
                identity.subject(ws, "user", user_id),
                identity.UserUpserted(
                    workspace_id=ws,
                    user_id=user_id,
                    external_id=name,
                    name=name,
                    created=True,
                    at=datetime.now(UTC),
                ),
                msg_id=new_id("evt"),
                workspace=ws,
            )
        created = await call(
            CreateConversation(
                actor=Actor(workspace_id=ws, key_id="key_test"),
                input=ConversationInput(participant_ids=[ann, bob], type="group"),
            )
        )
        cid = created.conversation.id
        conv_subject = subject(ws, cid)

        # The log as an older build wrote it: message.posted, version 1.
        for seq, (author, text) in enumerate([(ann, "old one"), (bob, "old two")], start=2):
            body = {
                "conversation_id": cid,
                "seq": seq,
                "at": datetime.now(UTC).isoformat(),
                "message_id": new_id("msg"),
                "sender": author,
                "text": text,
            }
            headers = {
                events.H_MSG_ID: new_id("evt"),
                events.H_EVENT: "message.posted",
                events.H_SCHEMA: "1",
                events.H_WORKSPACE: ws,
                events.H_ACTOR: author,
                "Nats-Expected-Last-Subject-Sequence": str(
                    await last_version(service.js, CONVERSATIONS.name, conv_subject)
                ),
            }
            await service.js.publish(
                conv_subject, msgspec.json.encode(body), stream=CONVERSATIONS.name, headers=headers
            )

        # This build writes version 2, deciding on a state folded from both versions (its
        # cached state is stale: the append conflicts, it reloads through the upcaster).
        saved = await call(
            PostMessage(
                actor=Actor(workspace_id=ws, user_id=ann),
                conversation_id=cid,
                sender_id=ann,
                input=MessageInput(content="new one"),
            )
        )
        assert saved.message.seq == 4
        stored = [e async for e in read_subject(service.nc, CONVERSATIONS.name, conv_subject)]
        assert [(e.type, e.schema) for e in stored] == [
            ("conversation.created", 1),
            ("message.posted", 1),
            ("message.posted", 1),
            ("message.posted", 2),
        ]
        assert all(isinstance(e.event, MessagePosted) for e in stored[1:])

        # The query API (the gateway serves exactly this) shows all three.
        page = await call(
            ListMessages(
                actor=Actor(workspace_id=ws, user_id=bob),
                conversation_id=cid,
                after=0,
                min_seq=saved.stream_seq,
            )
        )
        shown = [(m.seq, m.sender.name if m.sender else None, m.content) for m in page.data]
        assert shown == [(2, "Ann", "old one"), (3, "Bob", "old two"), (4, "Ann", "new one")]
        async with service.engine.connect() as conn:  # type: ignore[union-attr]
            rows = await conn.execute(
                sa.select(TABLES.messages.c.seq, TABLES.messages.c.content)
                .where(TABLES.messages.c.conversation_id == cid)
                .order_by(TABLES.messages.c.seq)
            )
            assert rows.all() == [(2, "old one"), (3, "old two"), (4, "new one")]

        # A replay of the whole log (what a rebuild does) gives the same read model.
        assert service.engine is not None
        job = ReadModelRebuild(
            service.js,
            service.engine,
            find("messaging"),
            purpose="verify",
            keys=await service.key_ring(),
        )
        differences: list[Any] = []
        async with job.exclusive():
            await job.drop_scratch()
            await job.prepare()
            result = await job.verify(Progress(), differences.append)
            await job.drop_scratch()
        assert result.identical, differences
        assert sum(result.rows.values()) > 0
    finally:
        await service.stop()
