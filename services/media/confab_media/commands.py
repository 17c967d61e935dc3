"""The write side of media: ingests, attaching, deleting and purging attachments.

Ingesting an upload, in order:

1. an *intent* is written to the KV bucket ``media_ingests`` (the attachment,
   the caller's deadline, and later the object keys it is about to write);
2. the upload is read from the object store ``uploads`` into a temporary
   file, checked and processed by content (``content.prepare``) in a thread;
3. the objects are written to the bucket, then ``attachment.stored`` is
   appended, unless the caller's deadline has passed (it has given up);
4. the intent is deleted, and the reply is sent once the read model shows it.

The temporary upload is deleted whatever happens. When anything fails, what
was written is removed and the intent deleted. When the process dies instead,
the intent stays; once its deadline is past, any media process's sweeper
removes the objects, the upload and (if step 3 got as far as the log)
appends ``attachment.deleted``, then deletes the intent. So the caller either
got its attachment, or got an error and, shortly after its deadline, nothing
of the upload is left. (One window is left open on purpose: a crash between
deleting the intent and sending the reply leaves a stored attachment that the
caller never heard of; the other order would lose attachments a caller was
told about.)

Purging: an upload still unattached ``upload_ttl_seconds`` after it was
stored is left out of every filtered read (it can no longer be attached), and
``upload_grace_seconds`` later the sweeper purges it, once
``MessageLinks`` has followed its conversation up to now: an intent naming its
objects is written, ``attachment.deleted`` (``upload_expired``) is decided
against the log (losing to an ``attachment.attached`` appended meanwhile),
the objects are removed, and the intent deleted. A process that dies in
between leaves the intent, and the sweeper finishes the removal.

Every change to an attachment is a command of the attachment decider
(``domain``) run by the command shell (``confab.shell``): store once, attach
once, delete once, each under a message id of its own (``stored:<id>``,
``attached:<id>``, ``deleted:<id>``) so a retry anywhere is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from confab import shell
from confab.aggregate import Executed
from confab.bus import MEDIA
from confab.contracts.events.media import AttachmentStored, DeleteReason, subject
from confab.contracts.events.messaging import MessagePosted
from confab.contracts.media import (
    UPLOAD_TTL_SECONDS,
    UPLOADS_BUCKET,
    IngestUpload,
    StoredAttachment,
)
from confab.errors import ConfabError, InternalError, InvalidRequest, PayloadTooLarge, Unavailable
from confab.ids import is_valid_id
from confab.logging import get_logger
from confab.projection import ProjectionRunner
from confab.rpc import CallContext
from confab.shell import CommandShell, Route
from confab_media import content, domain
from confab_media.domain import AttachmentState, Policy
from confab_media.handlers import THUMBNAIL_DISPOSITION, Lookups, disposition, utcnow
from confab_media.settings import MediaSettings
from confab_media.storage import Storage
from confab_media.store import Store

log = get_logger("confab_media")

INGESTS_BUCKET = "media_ingests"
DEFAULT_INGEST_SECONDS = 60.0
DEADLINE_MARGIN = 1.0  # stop this long before the caller's deadline: the reply must reach it
SWEEP_GRACE = 2.0  # an intent is abandoned this long after its deadline
PURGE_BATCH = 100  # expired uploads looked at per sweep
PURGE_SECONDS = 30.0  # a purge's intent is finished by the sweeper this long after it began


class Intent(msgspec.Struct, kw_only=True):
    """An ingest in progress, kept in ``media_ingests`` under the attachment's id."""

    workspace_id: str
    attachment_id: str
    deadline: float  # time.time() after which nothing may be stored
    keys: list[str] = []
    # A purge of an expired upload, not an ingest: past the deadline, its objects are
    # removed if the log says it was deleted, and nothing else is done.
    purge: bool = False


_intent_decoder = msgspec.json.Decoder(Intent)


async def uploads_store(js: JetStreamContext, replicas: int = 1) -> ObjectStore:
    """The temporary ``uploads`` object store, created if missing (TTL: UPLOAD_TTL_SECONDS)."""
    try:
        return await js.object_store(UPLOADS_BUCKET)
    except BucketNotFoundError:
        config = ObjectStoreConfig(
            ttl=UPLOAD_TTL_SECONDS, storage=StorageType.FILE, replicas=replicas
        )
        return await js.create_object_store(UPLOADS_BUCKET, config=config)


async def ingests_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    try:
        return await js.key_value(INGESTS_BUCKET)
    except BucketNotFoundError:
        config = KeyValueConfig(
            bucket=INGESTS_BUCKET, history=1, storage=StorageType.FILE, replicas=replicas
        )
        return await js.create_key_value(config=config)


class Commands:
    def __init__(
        self,
        shell: CommandShell[domain.Command, AttachmentState],
        lookups: Lookups,
        store: Store,
        attachments: ProjectionRunner,
        storage: Storage,
        uploads: ObjectStore,
        ingests: KeyValue,
        settings: MediaSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.shell = shell
        self.aggregates = shell.aggregates
        self.lookups = lookups
        self.store = store  # unattached uploads, for the purge
        self.attachments = attachments
        self.storage = storage
        self.uploads = uploads
        self.ingests = ingests
        self.settings = settings
        self.clock = clock
        self.ttl = timedelta(seconds=settings.upload_ttl_seconds)
        self.grace = timedelta(seconds=settings.upload_grace_seconds)
        self._slots = asyncio.Semaphore(settings.ingest_concurrency)
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def routes(self) -> list[Route]:
        return [(IngestUpload, self.ingest)]

    async def _run(
        self,
        workspace_id: str,
        attachment_id: str,
        command: domain.Command,
        *,
        msg_id: str,
        actor: str = "",
        correlation: str = "",
    ) -> Executed[AttachmentState]:
        """``command`` on the attachment's aggregate, under ``msg_id``."""
        where = shell.Intent(
            subject(workspace_id, attachment_id), command, workspace_id, actor, msg_id
        )
        return await self.shell.run(where, CallContext(correlation=correlation))

    # -- ingest ----------------------------------------------------------------------------

    async def ingest(self, cmd: IngestUpload, ctx: CallContext) -> StoredAttachment:
        for name in ("workspace_id", "conversation_id", "uploader_id", "attachment_id"):
            if not is_valid_id(getattr(cmd, name)):
                raise InvalidRequest(f"The {name} is not valid.", {name: "not a valid id"})
        if cmd.filename is not None and cmd.filename.strip():
            domain.check_filename(cmd.filename)  # before any work: refused names cost nothing
        subject_ = subject(cmd.workspace_id, cmd.attachment_id)
        state, _ = await self.aggregates.load(subject_, fresh=True)
        if state.stored is not None:  # a retried ingest of what is stored: answer it again
            await self._drop_upload(cmd.attachment_id)
            if state.deleted is not None:
                raise InvalidRequest("This upload was discarded.", {"file": "upload it again"})
            return await self._reply(state.stored, 0)
        deadline = ctx.deadline or time.time() + DEFAULT_INGEST_SECONDS
        return await self._ingest(cmd, ctx, subject_, deadline)

    async def _ingest(
        self, cmd: IngestUpload, ctx: CallContext, subject_: str, deadline: float
    ) -> StoredAttachment:
        intent = Intent(
            workspace_id=cmd.workspace_id, attachment_id=cmd.attachment_id, deadline=deadline
        )
        await self._remember(intent)
        stored: AttachmentStored | None = None
        try:
            policy = self.lookups.policy(cmd.workspace_id)
            with tempfile.TemporaryDirectory(prefix="confab-media-") as scratch:
                path = Path(scratch) / "upload"
                await self._download(cmd.attachment_id, path, policy)
                async with self._slots:  # decoding an image takes CPU and memory
                    prepared = await asyncio.to_thread(
                        content.prepare,
                        path,
                        policy,
                        max_pixels=self.settings.max_image_pixels,
                        thumbnail_size=self.settings.thumbnail_size,
                    )
                filename = domain.sanitize_filename(cmd.filename, prepared.file_type)
                key = domain.object_key(cmd.workspace_id, cmd.attachment_id, prepared.file_type.ext)
                thumb_key = None
                if prepared.thumbnail is not None and prepared.thumbnail_ext:
                    thumb_key = domain.thumbnail_key(
                        cmd.workspace_id, cmd.attachment_id, prepared.thumbnail_ext
                    )
                intent.keys = [key, *([thumb_key] if thumb_key else [])]
                await self._remember(intent)  # before writing: a crash leaves nothing unnamed
                await self._write(key, prepared, filename)
                if thumb_key and prepared.thumbnail is not None:
                    await self.storage.put_bytes(
                        thumb_key,
                        prepared.thumbnail,
                        prepared.thumbnail_type or "image/jpeg",
                        THUMBNAIL_DISPOSITION,
                    )
            if time.time() > deadline - DEADLINE_MARGIN:
                raise Unavailable("Processing the upload took too long; try again.")
            stored = AttachmentStored(
                workspace_id=cmd.workspace_id,
                attachment_id=cmd.attachment_id,
                conversation_id=cmd.conversation_id,
                uploader_id=cmd.uploader_id,
                filename=filename,
                content_type=prepared.file_type.mime,
                size=prepared.size,
                width=prepared.width,
                height=prepared.height,
                key=key,
                thumbnail_key=thumb_key,
                thumbnail_content_type=prepared.thumbnail_type if thumb_key else None,
                sha256=prepared.sha256,
                at=self.clock(),
                reencoded=prepared.reencoded,
            )
            decision = await self._run(
                cmd.workspace_id,
                cmd.attachment_id,
                domain.StoreAttachment(stored=stored),
                msg_id=f"stored:{cmd.attachment_id}",
                actor=cmd.uploader_id,
                correlation=ctx.correlation,
            )
            if decision.state.stored is None:
                raise InternalError()
            stored = decision.state.stored
            await self._forget(cmd.attachment_id)
        except BaseException as exc:
            # Not stored (or not sure): take back whatever was written. The sweeper
            # finishes this if even that fails.
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self.abandon(intent, reason="ingest failed", correlation=ctx.correlation)
                )
            if not isinstance(exc, ConfabError):
                log.warning("ingest_failed", attachment_id=cmd.attachment_id, error=repr(exc))
            raise
        finally:
            await self._drop_upload(cmd.attachment_id)
        log.info(
            "attachment_stored",
            attachment_id=stored.attachment_id,
            content_type=stored.content_type,
            size=stored.size,
        )
        return await self._reply(stored, decision.version)

    async def _reply(self, stored: AttachmentStored, seq: int) -> StoredAttachment:
        if seq and not await self.attachments.wait_for(seq, self.settings.read_wait_seconds):
            log.warning("read_model_behind", seq=seq, checkpoint=self.attachments.checkpoint)
        return self.lookups.signed(
            {
                "id": stored.attachment_id,
                "conversation_id": stored.conversation_id,
                "uploader_id": stored.uploader_id,
                "filename": stored.filename,
                "content_type": stored.content_type,
                "size": stored.size,
                "width": stored.width,
                "height": stored.height,
                "object_key": stored.key,
                "thumbnail_key": stored.thumbnail_key,
                "thumbnail_content_type": stored.thumbnail_content_type,
                "reencoded": stored.reencoded,
            }
        )

    async def _download(self, attachment_id: str, path: Path, policy: Policy) -> None:
        try:
            info = await self.uploads.get_info(attachment_id)
        except NotFoundError:
            raise InvalidRequest(
                "The upload was not found; send the file again.", {"file": "no such upload"}
            ) from None
        if (info.size or 0) > policy.max_bytes:
            raise PayloadTooLarge(
                f"The file is larger than {policy.max_bytes} bytes.",
                {"file": f"at most {policy.max_bytes} bytes"},
            )
        with path.open("wb") as file:
            await self.uploads.get(attachment_id, writeinto=file)

    async def _write(self, key: str, prepared: content.Prepared, filename: str) -> None:
        """The object, with the headers it is served with when nothing overrides them."""
        mime = prepared.file_type.mime
        served = domain.served_type(mime)
        shown = disposition(filename, mime, prepared.reencoded)
        if prepared.body is not None:
            await self.storage.put_bytes(key, prepared.body, served, shown)
        elif prepared.path is not None:
            await self.storage.put_file(key, prepared.path, served, shown)

    async def _drop_upload(self, attachment_id: str) -> None:
        """Delete the temporary upload; it may be gone already (the gateway deletes it too)."""
        with contextlib.suppress(NotFoundError):
            await self.uploads.delete(attachment_id)

    # -- intents and the sweeper --------------------------------------------------------------

    async def _remember(self, intent: Intent) -> None:
        await self.ingests.put(intent.attachment_id, msgspec.json.encode(intent))

    async def _forget(self, attachment_id: str) -> None:
        with contextlib.suppress(KeyNotFoundError):
            await self.ingests.delete(attachment_id)

    async def abandon(self, intent: Intent, *, reason: str, correlation: str = "") -> None:
        """Undo an ingest that will not complete: objects, upload, and a stored event if any."""
        await self.storage.remove(intent.keys)
        await self._drop_upload(intent.attachment_id)
        await self.delete_attachment(
            intent.workspace_id,
            intent.attachment_id,
            reason="ingest_abandoned",
            correlation=correlation,
        )
        await self._forget(intent.attachment_id)
        log.info("ingest_abandoned", attachment_id=intent.attachment_id, why=reason)

    async def sweep(self) -> int:
        """Abandon the ingests whose deadline has passed (their process died); how many."""
        try:
            keys = await self.ingests.keys()
        except NoKeysError:
            return 0
        done = 0
        for key in keys:
            try:
                entry = await self.ingests.get(key)
            except KeyNotFoundError:
                continue
            if not entry.value:
                continue
            try:
                intent = _intent_decoder.decode(entry.value)
            except msgspec.DecodeError:
                await self._forget(key)
                continue
            if intent.deadline + SWEEP_GRACE > time.time():
                continue
            if intent.purge:
                await self._finish_purge(intent)
            else:
                await self.abandon(intent, reason="past its deadline")
            done += 1
        return done

    def start_sweeper(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="media:sweeper")

    async def stop_sweeper(self) -> None:
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _sweep_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("sweep_failed", error=repr(exc))
            try:
                await self.purge()
            except Exception as exc:
                log.warning("purge_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.sweep_seconds)

    # -- expired uploads -----------------------------------------------------------------------

    async def purge(self) -> int:
        """Purge the uploads no message attached within their TTL (and grace); how many."""
        rows = await self.store.unattached(
            before=self.clock() - self.ttl - self.grace, limit=PURGE_BATCH
        )
        done = 0
        for row in rows:
            # Not before every message of its conversation so far has been seen: one
            # may attach it (after an upgrade, MessageLinks replays them all first).
            if not await self.lookups.followed(row["workspace_id"], [row["conversation_id"]]):
                continue
            if await self.expire(row["workspace_id"], row["id"]):
                done += 1
        return done

    async def expire(self, workspace_id: str, attachment_id: str) -> bool:
        """Delete one unattached upload past its TTL, then remove its objects; True if done.

        The deletion is decided against the log first, so a message that attached it a
        moment ago wins, and nothing of an attached upload is ever removed.
        """
        subject_ = subject(workspace_id, attachment_id)
        now = self.clock()
        state, _ = await self.aggregates.load(subject_, fresh=True)
        if state.stored is None or not domain.expired(state, now=now, ttl=self.ttl):
            return False
        stored = state.stored
        intent = Intent(
            workspace_id=workspace_id,
            attachment_id=attachment_id,
            deadline=time.time() + PURGE_SECONDS,
            keys=[k for k in (stored.key, stored.thumbnail_key) if k],
            purge=True,
        )
        await self._remember(intent)
        decision = await self._run(
            workspace_id,
            attachment_id,
            domain.Expire(now=now, ttl=self.ttl),
            msg_id=f"deleted:{attachment_id}",
        )
        deleted = decision.state.deleted
        if deleted is None or deleted.reason != "upload_expired":
            await self._forget(attachment_id)  # attached meanwhile: nothing to take back
            return False
        await self._finish_purge(intent)
        log.info("upload_expired", attachment_id=attachment_id)
        return True

    async def _finish_purge(self, intent: Intent) -> None:
        """Remove a purged upload's objects (only if the log says it is deleted), then
        forget the intent. Kept if the store fails: the sweeper tries again."""
        state, _ = await self.aggregates.load(
            subject(intent.workspace_id, intent.attachment_id), fresh=True
        )
        if state.deleted is not None:
            await self.storage.remove(intent.keys)
        await self._forget(intent.attachment_id)

    # -- attaching -----------------------------------------------------------------------------

    async def on_message_posted(
        self, subject_: str, posted: MessagePosted, correlation: str
    ) -> None:
        """Attach what a message claims (messaging checked it; the log decides once)."""
        parts = subject_.split(".")  # conv.evt.<workspace>.<conversation>
        if len(parts) != 4:
            return
        workspace_id, conversation_id = parts[2], parts[3]
        for attachment_id in domain.deletable(posted.attachment_ids):
            if is_valid_id(attachment_id):
                await self._attach(
                    workspace_id, conversation_id, attachment_id, posted, correlation
                )

    async def _attach(
        self,
        workspace_id: str,
        conversation_id: str,
        attachment_id: str,
        posted: MessagePosted,
        correlation: str,
    ) -> None:
        command = domain.Attach(
            conversation_id=conversation_id,
            sender_id=posted.sender_id,
            message_id=posted.message_id,
            now=self.clock(),
        )
        decision = await self._run(
            workspace_id,
            attachment_id,
            command,
            msg_id=f"attached:{attachment_id}",
            actor=posted.sender_id or "",
            correlation=correlation,
        )
        state = decision.state
        if state.attached is not None and state.attached.message_id == posted.message_id:
            return
        if state.deleted is not None and state.deleted.reason != "upload_expired":
            return  # replaying history: its message was deleted since
        # Unknown, expired first, or claimed by another message: the message shows it as
        # missing. Messaging checks before posting, so this is rare.
        log.warning(
            "attachment_not_attached", attachment_id=attachment_id, message_id=posted.message_id
        )

    # -- deletion ------------------------------------------------------------------------------

    async def delete_attachment(
        self,
        workspace_id: str,
        attachment_id: str,
        *,
        reason: DeleteReason,
        message_id: str | None = None,
        conversation_id: str | None = None,
        correlation: str = "",
    ) -> None:
        """Remove an attachment's objects, then append ``attachment.deleted`` (both idempotent)."""
        if not (is_valid_id(workspace_id) and is_valid_id(attachment_id)):
            return
        subject_ = subject(workspace_id, attachment_id)
        state, _ = await self.aggregates.load(subject_, fresh=True)
        stored = state.stored
        if stored is None or state.deleted is not None:
            return
        if conversation_id is not None and stored.conversation_id != conversation_id:
            log.warning("attachment_not_in_conversation", attachment_id=attachment_id)
            return
        await self.storage.remove([k for k in (stored.key, stored.thumbnail_key) if k])
        command = domain.Delete(
            workspace_id=workspace_id,
            attachment_id=attachment_id,
            reason=reason,
            message_id=message_id,
            now=self.clock(),
        )
        await self._run(
            workspace_id,
            attachment_id,
            command,
            msg_id=f"deleted:{attachment_id}",
            correlation=correlation,
        )
        log.info("attachment_deleted", attachment_id=attachment_id, reason=reason)

    async def erase_files(self, workspace_id: str, user_id: str, correlation: str) -> None:
        """Delete every attachment an erased user uploaded (``user_erased``), once the read
        model has every attachment stored so far (a bounded wait: an erased user uploads
        nothing more, and what was stored is in ``MEDIA`` already)."""
        if not (is_valid_id(workspace_id) and is_valid_id(user_id)):
            return
        last = (await self.lookups.js.stream_info(MEDIA.name)).state.last_seq
        if not await self.attachments.wait_for(last, self.settings.read_wait_seconds):
            log.warning("erased_users_files_behind", user_id=user_id, media_seq=last)
        for attachment_id in await self.store.uploaded_by(workspace_id, user_id):
            await self.delete_attachment(
                workspace_id, attachment_id, reason="user_erased", correlation=correlation
            )
        log.info("erased_users_files_deleted", user_id=user_id)

    async def on_message_deleted(
        self, subject_: str, attachment_id: str, message_id: str, correlation: str
    ) -> None:
        # conv.evt.<workspace>.<conversation>
        parts = subject_.split(".")
        if len(parts) != 4:
            return
        await self.delete_attachment(
            parts[2],
            attachment_id,
            reason="message_deleted",
            message_id=message_id,
            conversation_id=parts[3],
            correlation=correlation,
        )
