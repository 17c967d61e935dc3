"""The read side of media: the upload policy and attachments as the read model has them.

Reading: an upload is readable by its uploader alone until a message attaches
it (``reader_id``); one that looks unattached to another reader is looked at
again once ``MessageLinks`` has followed its conversation up to now, so the
message that attaches it a moment ago counts. An id the read model does not
have yet is looked up in the log and waited for (bounded). Past its TTL an
unattached upload is left out of every filtered read: it can no longer be
attached, and the sweeper purges it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from confab.bus import MEDIA
from confab.contracts.events.media import subject
from confab.contracts.media import AttachmentList, GetAttachments, GetUploadPolicy, UploadPolicy
from confab.ids import is_valid_id
from confab.projection import ProjectionRunner
from confab.rpc import CallContext
from confab.shell import Route
from confab_media.handlers import Lookups
from confab_media.store import Store

MISSING_LOOKUPS = 32  # ids looked up in the log when the read model does not have them yet


class Queries:
    def __init__(
        self,
        js: JetStreamContext,
        store: Store,
        attachments: ProjectionRunner,
        lookups: Lookups,
    ) -> None:
        self.js = js
        self.store = store
        self.attachments = attachments
        self.lookups = lookups

    def routes(self) -> list[Route]:
        return [
            (GetUploadPolicy, self.upload_policy),
            (GetAttachments, self.get_attachments),
        ]

    async def upload_policy(self, query: GetUploadPolicy, _ctx: CallContext) -> UploadPolicy:
        policy = self.lookups.policy(query.workspace_id)
        return UploadPolicy(max_bytes=policy.max_bytes, allowed_types=list(policy.allowed))

    async def get_attachments(self, query: GetAttachments, _ctx: CallContext) -> AttachmentList:
        workspace_id = query.workspace_id
        if not is_valid_id(workspace_id):
            return AttachmentList(data=[])
        ids = list(dict.fromkeys(i for i in query.attachment_ids if is_valid_id(i)))
        rows = await self.store.attachments(workspace_id, ids)
        missing = [i for i in ids if i not in rows][:MISSING_LOOKUPS]
        if missing and await self._catch_up(workspace_id, missing):
            rows.update(await self.store.attachments(workspace_id, missing))
        rows = {
            i: row
            for i, row in rows.items()
            if query.conversation_id in (None, row["conversation_id"])
            and query.uploader_id in (None, row["uploader_id"])
        }
        if query.reader_id is not None:
            rows = await self._readable(workspace_id, rows, query.reader_id)
        if query.reader_id is not None or query.uploader_id is not None:
            # Past its TTL an unattached upload can no longer be attached: it is gone.
            since = self.lookups.clock() - self.lookups.ttl
            rows = {
                i: row
                for i, row in rows.items()
                if row["attached_to"] is not None or row["created_at"] >= since
            }
        return AttachmentList(data=[self.lookups.signed(rows[i]) for i in ids if i in rows])

    async def _readable(
        self, workspace_id: str, rows: dict[str, dict[str, Any]], reader_id: str
    ) -> dict[str, dict[str, Any]]:
        """The rows ``reader_id`` may read: its own uploads, and attached ones."""
        waiting = [
            i
            for i, row in rows.items()
            if row["attached_to"] is None and not (reader_id and row["uploader_id"] == reader_id)
        ][:MISSING_LOOKUPS]
        conversations = {rows[i]["conversation_id"] for i in waiting}
        # The message that attached one may have been posted a moment ago.
        if waiting and await self.lookups.followed(workspace_id, conversations, wait=True):
            await self._catch_up(workspace_id, waiting)
            fresh = await self.store.attachments(workspace_id, waiting)
            rows = {i: row for i, row in rows.items() if i not in waiting} | fresh
        return {
            i: row
            for i, row in rows.items()
            if (reader_id and row["uploader_id"] == reader_id) or row["attached_to"] is not None
        }

    async def _catch_up(self, workspace_id: str, ids: list[str]) -> bool:
        """Wait (bounded) for the read model to show what the log has of ``ids``; True if any."""

        async def last(attachment_id: str) -> int:
            try:
                msg = await self.js.get_last_msg(
                    MEDIA.name, subject(workspace_id, attachment_id), direct=False
                )
            except NotFoundError:
                return 0
            return msg.seq or 0

        target = max(await asyncio.gather(*(last(i) for i in ids)))
        if not target or target <= self.attachments.checkpoint:
            return False
        await self.attachments.wait_for(target, self.lookups.settings.read_wait_seconds)
        return True
