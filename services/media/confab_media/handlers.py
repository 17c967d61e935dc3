"""What both sides of media share: policies, signed URLs, how far links have got.

``commands`` (ingests, attaching, deleting, purging) and ``queries`` (reads
of the attachment read model) share:

- the workspace's upload policy (``CONFAB_MEDIA_*`` settings, per-workspace overrides);
- the public object of a stored attachment, with presigned URLs good for
  ``url_seconds``: only images media encoded afresh are served inline,
  the presigned URL says so (``response-content-disposition``,
  ``response-content-type``) and so does the stored object itself;
- how far ``MessageLinks`` (the follower of ``CONVERSATIONS`` that attaches
  attachments) has followed a conversation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from confab.bus import CONVERSATIONS
from confab.contracts.events.messaging import Attachment
from confab.contracts.events.messaging import subject as conversation_subject
from confab.contracts.media import StoredAttachment
from confab.projection import ProjectionRunner
from confab_media import domain
from confab_media.domain import Policy
from confab_media.settings import MediaSettings
from confab_media.storage import Storage

THUMBNAIL_DISPOSITION = "inline"  # thumbnails are always media's own encoding


def utcnow() -> datetime:
    return datetime.now(UTC)


def disposition(filename: str, content_type: str, reencoded: bool) -> str:
    return domain.content_disposition(filename, domain.served_inline(content_type, reencoded))


class Lookups:
    """Policies, signed URLs and how far ``MessageLinks`` has got, for both sides."""

    def __init__(
        self,
        js: JetStreamContext,
        storage: Storage,
        settings: MediaSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.js = js
        self.storage = storage
        self.settings = settings
        self.clock = clock
        self.default_policy = Policy(
            max_bytes=settings.max_bytes,
            allowed=domain.parse_types(settings.allowed_types),
            link_previews=settings.link_previews,
        )
        self.policies = domain.parse_policies(settings.workspace_policies, self.default_policy)
        self.ttl = timedelta(seconds=settings.upload_ttl_seconds)
        # The follower of CONVERSATIONS that attaches attachments (set once it is added).
        self.links: ProjectionRunner | None = None

    def policy(self, workspace_id: str) -> Policy:
        return domain.policy_for(workspace_id, self.default_policy, self.policies)

    async def followed(
        self, workspace_id: str, conversation_ids: Iterable[str], *, wait: bool = False
    ) -> bool:
        """True once ``MessageLinks`` has applied every event of these conversations so far
        (waiting for it, bounded, if ``wait``)."""
        if self.links is None:
            return False

        async def last(conversation_id: str) -> int:
            try:
                msg = await self.js.get_last_msg(
                    CONVERSATIONS.name,
                    conversation_subject(workspace_id, conversation_id),
                    direct=False,
                )
            except NotFoundError:
                return 0
            return msg.seq or 0

        target = max(await asyncio.gather(*(last(c) for c in conversation_ids)), default=0)
        if target <= self.links.checkpoint:
            return True
        return wait and await self.links.wait_for(target, self.settings.read_wait_seconds)

    def signed(self, row: dict[str, Any]) -> StoredAttachment:
        """The public object of a read-model row, with URLs good for ``url_seconds``."""
        lifetime = timedelta(seconds=self.settings.url_seconds)
        content_type = row["content_type"]
        url = self.storage.presign(
            row["object_key"],
            expires=lifetime,
            content_type=domain.served_type(content_type),
            disposition=disposition(row["filename"], content_type, row["reencoded"]),
        )
        thumbnail_url = None
        if row["thumbnail_key"]:
            thumbnail_url = self.storage.presign(
                row["thumbnail_key"],
                expires=lifetime,
                content_type=row["thumbnail_content_type"] or "image/jpeg",
                disposition=THUMBNAIL_DISPOSITION,
            )
        attachment = Attachment(
            id=row["id"],
            filename=row["filename"],
            content_type=content_type,
            size=row["size"],
            width=row["width"],
            height=row["height"],
            url=url,
            thumbnail_url=thumbnail_url,
        )
        return StoredAttachment(
            attachment=attachment,
            conversation_id=row["conversation_id"],
            uploader_id=row["uploader_id"],
            expires_at=self.clock() + lifetime,
        )
