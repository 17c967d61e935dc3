"""The media service over NATS RPC against real NATS, PostgreSQL and S3 (no gateway, no
messaging): uploads are put into the ``uploads`` object store and ingested as the
gateway does, and messages are ``message.posted`` events appended here directly.

Its media runs with a TTL of a second, so an upload no message attaches is purged
within seconds; a test waits on the events and the bucket with a deadline, never a
sleep. All tests share the session's NATS, so each works in workspaces of its own.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from minio import Minio
from PIL import Image

from confab.bus import CONVERSATIONS, ensure_streams
from confab.contracts.media import (
    UPLOADS_BUCKET,
    AttachmentDeleted,
    AttachmentList,
    GetAttachments,
    IngestUpload,
    StoredAttachment,
)
from confab.contracts.messaging import MessagePosted
from confab.contracts.messaging import subject as conversation_subject
from confab.db import create_engine, create_tables
from confab.eventlog import append
from confab.events import open_envelope
from confab.ids import new_id
from confab.rpc import RpcClient
from confab.service import Service
from confab_infra.s3 import S3Config, s3_client
from confab_infra.testing import TestBackends
from confab_media import app
from confab_media.settings import MediaSettings
from confab_media.store import ATTACHMENTS, upgrade

WAIT = 30.0
TTL = 1
GRACE = 2.0  # an attaching message is appended within this long of its upload being stored


def png_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (20, 160, 90)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def media(backends: TestBackends, fresh_database_url: str) -> AsyncIterator[Service]:
    settings = MediaSettings(
        nats_url=backends.nats_url,
        database_url=fresh_database_url,
        instance=f"test-{uuid.uuid4().hex[:6]}",
        s3_endpoint=backends.s3.endpoint,
        s3_access_key=backends.s3.access_key,
        s3_secret_key=backends.s3.secret_key,
        s3_bucket=f"media-test-{uuid.uuid4().hex[:8]}",
        upload_ttl_seconds=TTL,
        upload_grace_seconds=GRACE,
        sweep_seconds=0.2,
        read_wait_seconds=WAIT,
    )
    service = Service("media", settings)
    await service.start()
    try:
        await ensure_streams(service.js, [CONVERSATIONS])
        await app.setup(service)
        # A fresh database: its follower replays what earlier tests wrote first.
        last = (await service.js.stream_info(CONVERSATIONS.name)).state.last_seq
        links = service.runners["media.message_links"]
        assert await links.wait_for(last, 120), links.last_error
        yield service
    finally:
        await service.stop()


@pytest.fixture
def bucket(media: Service) -> tuple[Minio, str]:
    settings = media.settings
    assert isinstance(settings, MediaSettings)
    config = S3Config(
        settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket
    )
    return s3_client(config), settings.s3_bucket


async def ingest(
    media: Service, workspace_id: str, conversation_id: str, uploader_id: str, data: bytes
) -> StoredAttachment:
    """What the gateway does: the file into the uploads store, then ``media.cmd.ingest``."""
    attachment_id = new_id("att")
    store = await media.js.object_store(UPLOADS_BUCKET)
    await store.put(attachment_id, data)
    stored = await RpcClient(media.nc, timeout=WAIT).call(
        IngestUpload(
            workspace_id=workspace_id,
            conversation_id=conversation_id,
            uploader_id=uploader_id,
            attachment_id=attachment_id,
            filename="picture.png",
        )
    )
    assert isinstance(stored, StoredAttachment)
    return stored


async def post(
    media: Service, workspace_id: str, conversation_id: str, sender_id: str, *ids: str
) -> None:
    """A message claiming ``ids``, as messaging appends it once it checked them."""
    message_id = new_id("msg")
    event = MessagePosted(
        conversation_id=conversation_id,
        seq=1,
        at=datetime.now(UTC),
        message_id=message_id,
        sender_id=sender_id,
        content="see attached",
        attachment_ids=list(ids),
    )
    await append(
        media.js,
        CONVERSATIONS.name,
        conversation_subject(workspace_id, conversation_id),
        event,
        msg_id=message_id,
        workspace=workspace_id,
        actor=sender_id,
    )


async def readable(media: Service, workspace_id: str, reader_id: str, *ids: str) -> list[str]:
    found = await RpcClient(media.nc, timeout=WAIT).call(
        GetAttachments(workspace_id=workspace_id, attachment_ids=list(ids), reader_id=reader_id)
    )
    assert isinstance(found, AttachmentList)
    return [a.attachment.id for a in found.data]


def keys(bucket: tuple[Minio, str], workspace_id: str) -> set[str]:
    client, name = bucket
    listed = client.list_objects(name, prefix=f"workspaces/{workspace_id}/", recursive=True)
    return {o.object_name or "" for o in listed}


async def test_an_upload_nobody_attaches_is_purged_and_an_attached_one_is_kept(
    media: Service, bucket: tuple[Minio, str]
) -> None:
    ws, conv, ann, bob = new_id("ws"), new_id("conv"), new_id("usr"), new_id("usr")
    live = await media.nc.subscribe(f"live.media.evt.{ws}.>")
    began = time.time()
    kept = await ingest(media, ws, conv, ann, png_bytes((64, 48)))
    await post(media, ws, conv, ann, kept.attachment.id)  # well within the grace
    dropped = await ingest(media, ws, conv, ann, png_bytes((64, 48)))
    objects = keys(bucket, ws)
    assert len(objects) == 4  # two pictures, two thumbnails
    # The attached one is anyone's (in its conversation: the gateway checks that).
    assert await readable(media, ws, bob, kept.attachment.id) == [kept.attachment.id]

    # Nobody attaches the other: past its TTL and the grace, it is deleted in the log ...
    deleted: AttachmentDeleted | None = None
    deadline = time.monotonic() + WAIT
    while deleted is None:
        msg = await live.next_msg(timeout=deadline - time.monotonic())
        envelope = open_envelope(msg.headers or {}, msg.data)
        if isinstance(envelope.event, AttachmentDeleted):
            deleted = envelope.event
            last_seq = int((msg.headers or {})["Nats-Sequence"])
    assert deleted.attachment_id == dropped.attachment.id
    assert (deleted.reason, deleted.message_id) == ("upload_expired", None)
    assert deleted.at.timestamp() > began + TTL + GRACE  # not a moment sooner

    # ... in the read model, where it reads as gone even to its uploader ...
    runner = media.runners["media.attachments"]
    assert await runner.wait_for(last_seq, WAIT)
    assert await readable(media, ws, ann, dropped.attachment.id) == []
    async with media.engine.connect() as conn:  # type: ignore[union-attr]
        rows = (
            await conn.execute(ATTACHMENTS.select().where(ATTACHMENTS.c.workspace_id == ws))
        ).all()
    by_id = {r.id: r for r in rows}
    assert by_id[dropped.attachment.id].delete_reason == "upload_expired"
    assert by_id[dropped.attachment.id].deleted_at is not None
    assert by_id[kept.attachment.id].deleted_at is None
    assert by_id[kept.attachment.id].attached_to is not None

    # ... and its objects leave the bucket; the attached one's stay.
    await until(lambda: all(dropped.attachment.id not in k for k in keys(bucket, ws)))
    assert keys(bucket, ws) == {k for k in objects if kept.attachment.id in k}
    assert await readable(media, ws, bob, kept.attachment.id) == [kept.attachment.id]
    await live.unsubscribe()


async def test_an_older_builds_table_is_brought_up_to_date(fresh_database_url: str) -> None:
    engine = create_engine(fresh_database_url)
    t, added = ATTACHMENTS, ("reencoded", "attached_to", "attached_at")
    try:
        # The table as the previous build made it, with one attachment in it.
        await create_tables(engine, t.metadata)
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP INDEX media.attachments_unattached"))
            for column in added:
                await conn.execute(sa.text(f"ALTER TABLE media.attachments DROP COLUMN {column}"))
            old = {c.name: c for c in t.columns if c.name not in added}
            row = {
                **{name: "x" for name, c in old.items() if not c.nullable},
                "size": 1,
                "seq": 7,
                "created_at": datetime.now(UTC),
            }
            await conn.execute(
                sa.table(t.name, *map(sa.column, row), schema=t.schema).insert(), row
            )
        for _ in range(2):  # and again: nothing left to do
            await upgrade(engine)
        async with engine.connect() as conn:
            (found,) = (await conn.execute(t.select())).all()
            indexes = await conn.run_sync(
                lambda sync: {i["name"] for i in sa.inspect(sync).get_indexes(t.name, t.schema)}
            )
        assert (found.reencoded, found.attached_to, found.attached_at) == (False, None, None)
        assert "attachments_unattached" in indexes
    finally:
        await engine.dispose()


async def until(condition: Any, timeout: float = WAIT) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.05)
