"""Widget attachments: uploads streamed into NATS, ingested by media; fresh download URLs.

``POST /api/widget/conversations/{id}/attachments`` takes ``multipart/form-data``
with a part named ``file``. The part is never held in memory: it is read in
chunks of ``UPLOAD_CHUNK_BYTES`` and published, chunk by chunk, into the
JetStream object store ``uploads`` (in its own format, so media reads it with
the ordinary object-store client), counting bytes as it goes: past the
workspace's limit the chunks are purged and the answer is 413 at once. The
name and the size are checked here; the type, by content, is media's call.
Then media ingests the upload (``media.cmd.ingest``); whatever it answers,
the temporary upload is gone afterwards (media deletes it, and so does this
module when the ingest fails; the bucket's TTL catches a gateway that dies
mid-upload).

``GET /api/widget/attachments/{id}`` answers the attachment with fresh
presigned URLs, to participants of its conversation only, and while no
message has attached it yet, to its uploader only (404 otherwise: media
leaves out an unattached upload for any other ``reader_id``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections import deque
from datetime import UTC, datetime

import msgspec
from aiohttp import BodyPartReader, MultipartReader
from aiohttp.http_exceptions import HttpProcessingError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError, NotFoundError

from confab.contracts.events.messaging import Attachment
from confab.contracts.media import (
    FILENAME_RULE,
    UPLOAD_CHUNK_BYTES,
    UPLOAD_TTL_SECONDS,
    UPLOADS_BUCKET,
    AttachmentList,
    Filename,
    GetAttachments,
    GetUploadPolicy,
    IngestUpload,
    StoredAttachment,
    UploadPolicy,
)
from confab.contracts.messaging import CheckParticipant
from confab.errors import (
    BadRequest,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from confab.ids import new_id
from confab.staff import CONVERSATIONS_REPLY
from confab_gateway.api import Call, Router

router = Router()

FILE_PART = "file"
# How long the gateway waits for media to check, process and store an upload; media
# stores nothing after this deadline (it travels with the request).
INGEST_TIMEOUT = 15.0
# What a multipart body may carry besides the file itself (boundaries, part headers).
MULTIPART_SLACK = 64 * 1024
OBJECT_STREAM = f"OBJ_{UPLOADS_BUCKET}"
ATTACHMENT_NOT_FOUND = "No attachment with that id."
ACK_WINDOW = 8  # chunks of one upload published ahead of their acknowledgements
ACK_TIMEOUT = 10.0

# One JetStream context per NATS connection, whose uploads bucket is known to exist
# (a context keeps a subscription for asynchronous publish acknowledgements).
_contexts: dict[int, JetStreamContext] = {}


@router.route(
    "POST",
    "/api/widget/conversations/{conversation_id}/attachments",
    auth="session",
    tag="widget",
    status=201,
    summary=(
        "Upload a file (multipart/form-data, part `file`) to attach to a message; "
        "its type is judged by content"
    ),
    files=(FILE_PART,),
    response=Attachment,
    errors=(400, 401, 404, 413, 415, 422),
)
async def upload(call: Call) -> Attachment:
    return await receive(call, call.actor.user_id or "")


@router.route(
    "POST",
    "/dashboard/api/conversations/{conversation_id}/attachments",
    auth="staff",
    permission=CONVERSATIONS_REPLY,
    tag="dashboard",
    status=201,
    summary="A staff member uploads a file to attach to their reply (as the widget does)",
    files=(FILE_PART,),
    response=Attachment,
    errors=(400, 401, 403, 404, 413, 415, 422),
)
async def staff_upload(call: Call) -> Attachment:
    assert call.staff is not None
    return await receive(call, call.staff.user_id)


async def receive(call: Call, uploader_id: str) -> Attachment:
    """Check, stream to the object store and ingest one uploaded file of ``uploader_id``
    for the call's conversation (the actor must see it: a participant, or staff)."""
    request = call.request
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Send the file as multipart/form-data with a part named {FILE_PART!r}, "
            f"not {request.content_type or 'no content type'}."
        )
    conversation_id = call.path["conversation_id"]
    policy, _ = await asyncio.gather(
        call.rpc.call(GetUploadPolicy(workspace_id=call.workspace_id)),
        call.rpc.call(
            CheckParticipant(
                actor=call.actor,
                conversation_id=conversation_id,
                min_seq=call.min_seq,
                act=True,  # a banned user uploads nothing
            )
        ),
    )
    assert isinstance(policy, UploadPolicy)
    length = request.content_length
    if length is not None and length > policy.max_bytes + MULTIPART_SLACK:
        raise _too_large(policy.max_bytes)
    part = await _file_part(await _multipart(call), policy.max_bytes)
    filename = part.filename
    if filename is not None:
        try:
            msgspec.convert(filename, Filename)
        except msgspec.ValidationError:
            raise InvalidRequest(
                "The file name is not valid.", {"filename": FILENAME_RULE}
            ) from None
    js = await _uploads_context(call)
    attachment_id = new_id("att")
    size = await store_upload(js, attachment_id, part, policy.max_bytes)
    try:
        if size == 0:
            raise InvalidRequest("The file is empty.", {FILE_PART: "empty"})
        stored: StoredAttachment = await call.rpc.call(
            IngestUpload(
                workspace_id=call.workspace_id,
                conversation_id=conversation_id,
                uploader_id=uploader_id,
                attachment_id=attachment_id,
                filename=filename,
            ),
            timeout=INGEST_TIMEOUT,
            correlation=call.correlation,
        )
    except BaseException:
        # Media deletes the upload itself; this covers a media that never got to it.
        with contextlib.suppress(Exception):
            await asyncio.shield(delete_upload(js, attachment_id))
        raise
    return stored.attachment


@router.route(
    "GET",
    "/api/widget/attachments/{attachment_id}",
    auth="session",
    tag="widget",
    summary=(
        "An attachment with fresh presigned URLs (participants of its conversation only; "
        "until a message attaches it, its uploader only)"
    ),
    response=Attachment,
    errors=(401, 404),
)
async def attachment(call: Call) -> Attachment:
    found: AttachmentList = await call.rpc.call(
        GetAttachments(
            workspace_id=call.workspace_id,
            attachment_ids=[call.path["attachment_id"]],
            reader_id=call.actor.user_id or "",
        )
    )
    if not found.data:
        raise NotFound(ATTACHMENT_NOT_FOUND)
    stored = found.data[0]
    try:
        await call.rpc.call(
            CheckParticipant(
                actor=call.actor, conversation_id=stored.conversation_id, min_seq=call.min_seq
            )
        )
    except NotFound:
        raise NotFound(ATTACHMENT_NOT_FOUND) from None
    return stored.attachment


# -- multipart -------------------------------------------------------------------------------


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The file is larger than this workspace's limit of {limit} bytes.",
        {FILE_PART: f"at most {limit} bytes"},
    )


MALFORMED = (ValueError, AssertionError, LookupError, HttpProcessingError)


def _malformed(exc: Exception) -> BadRequest:
    if isinstance(exc, HttpProcessingError):  # a part's headers: control characters, …
        return BadRequest(f"The multipart body is malformed: {exc.message}.")
    return BadRequest(f"The multipart body is malformed: {exc}.")


async def _multipart(call: Call) -> MultipartReader:
    try:
        return await call.request.multipart()
    except MALFORMED as exc:
        raise _malformed(exc) from None


async def _read(part: BodyPartReader) -> bytes:
    try:
        return await part.read_chunk(UPLOAD_CHUNK_BYTES)
    except MALFORMED as exc:
        raise _malformed(exc) from None


async def _file_part(reader: MultipartReader, limit: int) -> BodyPartReader:
    """The first part named ``file``; other parts are read past (within the same limit)."""
    skipped = 0
    while True:
        try:
            part = await reader.next()
        except MALFORMED as exc:
            raise _malformed(exc) from None
        if part is None:
            raise InvalidRequest(
                f"The multipart body has no part named {FILE_PART!r}.", {FILE_PART: "required"}
            )
        if isinstance(part, BodyPartReader) and part.name == FILE_PART:
            return part
        if isinstance(part, MultipartReader):
            raise BadRequest("Nested multipart bodies are not accepted.")
        while chunk := await _read(part):
            skipped += len(chunk)
            if skipped > limit:
                raise _too_large(limit)


# -- the uploads object store ------------------------------------------------------------------


async def _uploads_context(call: Call) -> JetStreamContext:
    key = id(call.rpc.nc)
    js = _contexts.get(key)
    if js is not None:
        return js
    js = call.rpc.nc.jetstream()
    try:
        await js.object_store(UPLOADS_BUCKET)
    except BucketNotFoundError:
        config = js_api.ObjectStoreConfig(
            ttl=UPLOAD_TTL_SECONDS,
            storage=js_api.StorageType.FILE,
            replicas=call.request.app["stream_replicas"],
        )
        await js.create_object_store(UPLOADS_BUCKET, config=config)
    return _contexts.setdefault(key, js)


async def _acked(future: asyncio.Future[js_api.PubAck]) -> None:
    try:
        await asyncio.wait_for(future, ACK_TIMEOUT)
    except TimeoutError:
        raise Unavailable("The upload store did not acknowledge in time; try again.") from None


async def store_upload(js: JetStreamContext, name: str, part: BodyPartReader, limit: int) -> int:
    """Stream ``part`` into ``uploads/<name>``; its size. PayloadTooLarge past ``limit``.

    Written as the object store's own client writes (chunks on a fresh subject,
    then the metadata with the SHA-256 digest, rolled up), so any object-store
    client reads it back. Nothing is left if this fails half-way.
    """
    nuid = new_id("u").removeprefix("u_")
    chunks_subject = f"$O.{UPLOADS_BUCKET}.C.{nuid}"
    meta_subject = f"$O.{UPLOADS_BUCKET}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
    digest = hashlib.sha256()
    size = chunks = 0
    buffer = bytearray()
    unacked: deque[asyncio.Future[js_api.PubAck]] = deque()
    try:
        while True:
            data = await _read(part)
            if data:
                size += len(data)
                if size > limit:
                    raise _too_large(limit)
                buffer += data
            if buffer and (len(buffer) >= UPLOAD_CHUNK_BYTES or not data):
                piece = bytes(buffer[:UPLOAD_CHUNK_BYTES])
                del buffer[:UPLOAD_CHUNK_BYTES]
                digest.update(piece)
                # In order on one connection; acknowledgements are awaited a window behind.
                unacked.append(await js.publish_async(chunks_subject, piece, stream=OBJECT_STREAM))
                chunks += 1
                if len(unacked) >= ACK_WINDOW:
                    await _acked(unacked.popleft())
                continue
            if not data:
                break
        while unacked:
            await _acked(unacked.popleft())
        info = js_api.ObjectInfo(
            name=name,
            bucket=UPLOADS_BUCKET,
            nuid=nuid,
            size=size,
            chunks=chunks,
            digest="SHA-256=" + base64.urlsafe_b64encode(digest.digest()).decode(),
            mtime=datetime.now(UTC).isoformat(),
            options=js_api.ObjectMetaOptions(max_chunk_size=UPLOAD_CHUNK_BYTES),
        )
        await js.publish(
            meta_subject,
            json.dumps(info.as_dict()).encode(),
            stream=OBJECT_STREAM,
            headers={"Nats-Rollup": "sub"},
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(_discard(js, chunks_subject, unacked))
        raise
    return size


async def _discard(
    js: JetStreamContext, chunks_subject: str, unacked: deque[asyncio.Future[js_api.PubAck]]
) -> None:
    """Purge a half-written upload once the chunks already sent are stored: purging
    while they are still in flight would let them land after it, orphaned."""
    if unacked:
        await asyncio.wait(list(unacked), timeout=ACK_TIMEOUT)
        for future in unacked:
            future.cancel()
    await js.purge_stream(OBJECT_STREAM, subject=chunks_subject)


async def delete_upload(js: JetStreamContext, name: str) -> None:
    with contextlib.suppress(NotFoundError):
        store = await js.object_store(UPLOADS_BUCKET)
        await store.delete(name)
