"""Attachments end to end: upload through the gateway, ingest by media into the embedded S3,
download through presigned URLs, inert objects (images re-encoded, everything else a
download), uploads private until attached, clean-up on deletion, bad input, and a media
crash. The purge of uploads nobody attaches is tested with a short TTL in
``services/media/tests/test_media_service.py``."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import psutil
import pytest
from minio import Minio
from nats.js.errors import NotFoundError
from PIL import Image

from confab import bus
from confab_infra.s3 import S3Config, s3_client
from confab_infra.testing import TestBackends
from tests.client import Api, new_workspace
from tests.stack import RunningStack

MB = 1024 * 1024


# -- files ---------------------------------------------------------------------------------


def png_bytes(size: tuple[int, int] = (640, 480)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (20, 160, 90)).save(out, "PNG")
    return out.getvalue()


def jpeg_with_exif() -> bytes:
    """800 x 600 pixels, tagged "rotate 90°" (so shown 600 x 800), with a camera and GPS."""
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x0131] = "secret-firmware"  # Software
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to show
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}  # GPS
    out = io.BytesIO()
    Image.new("RGB", (800, 600), (200, 30, 30)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


PDF = (
    b"%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
    b"2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\n"
    b"trailer <</Root 1 0 R>>\n%%EOF\n"
)
TEXT = "Notes for the viewing: bring the keys. Ünïcödé is fine.\n".encode()
EXECUTABLE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 48 + b"PE\x00\x00"


def multipart(
    parts: Iterable[tuple[str, str | None, bytes]], boundary: str = "confab-test-boundary"
) -> tuple[bytes, str]:
    """A multipart/form-data body written by hand: a file name arrives exactly as given
    (a quoted string with only backslash and quote escaped, or percent-encoded when it
    holds control characters, which a header may not carry raw)."""
    out = bytearray()
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None and filename.isprintable():
            quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
            disposition += f'; filename="{quoted}"'
        elif filename is not None:  # as RFC 5987 allows, percent-encoded
            disposition += f"; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}"
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        out += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


# -- the world -------------------------------------------------------------------------------


class World:
    def __init__(self, admin: Api, workspace: dict[str, Any]) -> None:
        self.workspace = workspace
        self.tenant = admin.as_(**{"X-API-Key": workspace["api_key"]})

    @property
    def id(self) -> str:
        return str(self.workspace["id"])

    async def user(self, name: str) -> tuple[dict[str, Any], Api]:
        status, user = await self.tenant.post(
            "/api/v1/users", {"external_id": f"{name}-{uuid.uuid4().hex[:6]}", "name": name}
        )
        assert status == 201, user
        status, session = await self.tenant.post("/api/v1/sessions", {"user_id": user["id"]})
        assert status == 201, session
        return user, self.tenant.as_(Authorization=f"Bearer {session['token']}")

    async def conversation(self, *users: dict[str, Any]) -> str:
        status, conv = await self.tenant.post(
            "/api/v1/conversations",
            {"participant_ids": [u["id"] for u in users], "type": "direct"},
        )
        assert status == 201, conv
        return str(conv["id"])


@pytest.fixture
async def world(stack: RunningStack, http: aiohttp.ClientSession) -> World:
    admin = Api(http, stack.gateway, stack.admin_headers)
    return World(admin, await new_workspace(admin))


class Bucket:
    """The stack's bucket, read directly: what media really left in it."""

    def __init__(self, client: Minio, name: str) -> None:
        self.client = client
        self.name = name

    def keys(self, workspace_id: str) -> list[str]:
        return sorted(
            o.object_name or ""
            for o in self.client.list_objects(
                self.name, prefix=f"workspaces/{workspace_id}/", recursive=True
            )
        )


@pytest.fixture
def s3(stack: RunningStack, backends: TestBackends) -> Bucket:
    c = backends.s3
    bucket = stack.info["s3_bucket"]
    return Bucket(s3_client(S3Config(c.endpoint, c.access_key, c.secret_key, bucket)), bucket)


@pytest.fixture
async def nc(stack: RunningStack) -> AsyncIterator[Any]:
    client = await bus.connect(stack.info["nats_url"], "test-media")
    try:
        yield client
    finally:
        await client.close()


async def upload(
    widget: Api, cid: str, data: bytes, filename: str | None = "file.bin"
) -> tuple[int, Any]:
    body, content_type = multipart([("file", filename, data)])
    return await widget.post(
        f"/api/widget/conversations/{cid}/attachments",
        data=body,
        headers={"Content-Type": content_type},
    )


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str]:
    """A presigned URL, fetched as a browser would: no credentials of ours."""
    status, data, headers = await fetch_with_headers(http, url)
    return status, data, headers.get("Content-Type", "")


async def fetch_with_headers(
    http: aiohttp.ClientSession, url: str
) -> tuple[int, bytes, dict[str, str]]:
    async with http.get(url) as response:
        return response.status, await response.read(), dict(response.headers)


def same_picture(a: bytes, b: bytes) -> bool:
    with Image.open(io.BytesIO(a)) as first, Image.open(io.BytesIO(b)) as second:
        return (
            first.size == second.size
            and first.convert("RGBA").tobytes() == second.convert("RGBA").tobytes()
        )


async def live_uploads(nc: Any) -> list[str]:
    """Objects in the temporary ``uploads`` store, and any chunks without an object."""
    js = nc.jetstream()
    store = await js.object_store("uploads")
    try:
        names = [o.name for o in await store.list(ignore_deletes=True)]
    except NotFoundError:
        names = []
    info = await js.stream_info("OBJ_uploads", subjects_filter="$O.uploads.C.>")
    chunks = sorted((info.state.subjects or {}).keys())
    return names + chunks


# -- tests -------------------------------------------------------------------------------------


async def test_attachments_round_trip_through_presigned_urls(
    world: World, stack: RunningStack, http: aiohttp.ClientSession, s3: Bucket, nc: Any
) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    _, eve_w = await world.user("Eve")
    cid = await world.conversation(ann, bob)
    png, jpeg = png_bytes(), jpeg_with_exif()

    # Names and claimed types mean nothing: every part says octet-stream.
    uploads = {}
    for name, data, filename in (
        ("png", png, "diagram.png"),
        ("jpeg", jpeg, "holiday photo.jpg"),
        ("pdf", PDF, "lease.pdf"),
        ("text", TEXT, "notes.txt"),
    ):
        status, body = await upload(ann_w, cid, data, filename)
        assert status == 201, body
        uploads[name] = body
    assert {k: v["content_type"] for k, v in uploads.items()} == {
        "png": "image/png",
        "jpeg": "image/jpeg",
        "pdf": "application/pdf",
        "text": "text/plain",
    }
    assert (uploads["png"]["width"], uploads["png"]["height"]) == (640, 480)
    assert (uploads["jpeg"]["width"], uploads["jpeg"]["height"]) == (600, 800)  # upright
    assert uploads["text"]["size"] == len(TEXT)  # the PNG is media's own encoding
    assert uploads["jpeg"]["filename"] == "holiday photo.jpg"
    assert uploads["pdf"]["thumbnail_url"] is None and uploads["png"]["thumbnail_url"]

    ids = [uploads[k]["id"] for k in ("png", "jpeg", "pdf", "text")]
    status, message = await ann_w.post(
        f"/api/widget/conversations/{cid}/messages",
        {"content": "Everything for Friday", "attachment_ids": ids},
    )
    assert status == 201, message
    assert [a["id"] for a in message["attachments"]] == ids

    # The other participant reads the message and downloads every file, without credentials.
    status, page = await bob_w.get(f"/api/widget/conversations/{cid}/messages")
    assert status == 200
    (seen,) = [m for m in page["data"] if m["id"] == message["id"]]
    got = {a["id"]: a for a in seen["attachments"]}
    assert list(got) == ids
    for name, original in (("pdf", PDF), ("text", TEXT)):
        status, data, content_type = await fetch(http, got[uploads[name]["id"]]["url"])
        assert status == 200 and data == original, name
        assert content_type.startswith(uploads[name]["content_type"])
    status, data, content_type = await fetch(http, got[uploads["png"]["id"]]["url"])
    assert status == 200 and content_type == "image/png" and same_picture(data, png)
    assert len(data) == uploads["png"]["size"]
    status, served, _ = await fetch(http, got[uploads["jpeg"]["id"]]["url"])
    assert status == 200
    image = Image.open(io.BytesIO(served))
    assert image.size == (600, 800) and len(image.getexif()) == 0
    assert b"SpyCam" not in served and b"secret-firmware" not in served
    assert b"SpyCam" in jpeg  # it was there to strip
    for name in ("png", "jpeg"):
        status, thumb, _ = await fetch(http, got[uploads[name]["id"]]["thumbnail_url"])
        assert status == 200 and max(Image.open(io.BytesIO(thumb)).size) <= 320

    # Fresh URLs on demand, for participants only.
    status, fresh = await bob_w.get(f"/api/widget/attachments/{uploads['pdf']['id']}")
    assert status == 200 and (await fetch(http, fresh["url"]))[1] == PDF
    status, body = await eve_w.get(f"/api/widget/attachments/{uploads['pdf']['id']}")
    assert (status, body["error"]["code"]) == (404, "not_found")
    other = World(
        Api(http, stack.gateway, stack.admin_headers),
        await new_workspace(Api(http, stack.gateway, stack.admin_headers), "Other"),
    )
    _, mallory_w = await other.user("Mallory")
    assert (await mallory_w.get(f"/api/widget/attachments/{uploads['pdf']['id']}"))[0] == 404
    status, _ = await upload(eve_w, cid, PDF, "sneaky.pdf")
    assert status == 404  # not a participant: cannot upload here either

    # An attachment belongs to one message, of its conversation, sent by its uploader.
    status, extra = await upload(ann_w, cid, TEXT, "again.txt")
    assert status == 201
    base = f"/api/widget/conversations/{cid}/messages"
    status, body = await ann_w.post(base, {"content": "again", "attachment_ids": [ids[0]]})
    assert status == 422 and "already attached" in body["error"]["details"]["attachment_ids"]
    status, body = await bob_w.post(base, {"content": "mine?", "attachment_ids": [extra["id"]]})
    assert status == 422 and "unknown attachment" in body["error"]["details"]["attachment_ids"]

    # Recovery payloads carry the attachment objects too.
    status, events = await bob_w.get(f"/api/widget/conversations/{cid}/events")
    created = [e for e in events["data"] if e["event"] == "message.created"]
    assert [a["id"] for a in created[-1]["data"]["attachments"]] == ids
    assert all(a["url"] for a in created[-1]["data"]["attachments"])

    # Deleting the message deletes its attachments' objects (media follows the event).
    stored = s3.keys(world.id)
    assert len(stored) == 7  # four files, two thumbnails, and the unattached text
    deleted = await nc.subscribe(f"live.media.evt.{world.id}.>")
    assert (await ann_w.delete(f"{base}/{message['id']}"))[0] == 204
    gone = set()
    while len(gone) < len(ids):
        msg = await deleted.next_msg(timeout=20)
        if (msg.headers or {}).get("Confab-Event") == "attachment.deleted":
            gone.add(json.loads(msg.data)["attachment_id"])
    assert gone == set(ids)
    assert s3.keys(world.id) == [k for k in stored if extra["id"] in k]
    assert (await bob_w.get(f"/api/widget/attachments/{ids[0]}"))[0] == 404
    assert await live_uploads(nc) == []


HTML_PAGE = b"<!doctype html><html><body><script>alert(document.domain)</script></body></html>\n"


async def test_attachments_are_inert_and_private_until_attached(
    world: World, http: aiohttp.ClientSession, s3: Bucket
) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    png = png_bytes((64, 48))
    status, picture = await upload(ann_w, cid, png + HTML_PAGE, "cat.png")
    assert status == 201, picture
    status, page = await upload(ann_w, cid, HTML_PAGE, "page.html")
    assert status == 201, page
    assert (page["content_type"], page["filename"]) == ("text/plain", "page.html.txt")
    status, pdf = await upload(ann_w, cid, PDF, "lease.pdf")
    assert status == 201, pdf

    # The picture is shown inline as media's encoding of its pixels: the page is gone.
    status, data, headers = await fetch_with_headers(http, picture["url"])
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"].startswith('inline; filename="cat.png"')
    assert HTML_PAGE not in data and b"<script>" not in data
    assert data.endswith(b"IEND\xaeB`\x82") and same_picture(data, png)
    assert picture["size"] == len(data) < len(png + HTML_PAGE)
    status, _, headers = await fetch_with_headers(http, picture["thumbnail_url"])
    assert (status, headers["Content-Type"]) == (200, "image/jpeg")
    # Everything else is a download, under a name that says what it is.
    for item, served_type, name in (
        (page, "text/plain; charset=utf-8", "page.html.txt"),
        (pdf, "application/pdf", "lease.pdf"),
    ):
        status, data, headers = await fetch_with_headers(http, item["url"])
        assert status == 200 and headers["Content-Type"] == served_type
        assert headers["Content-Disposition"].startswith(f'attachment; filename="{name}"')
    # The stored objects say the same to a read that names no headers.
    for item, disposition in ((picture, "inline"), (page, "attachment"), (pdf, "attachment")):
        (key,) = [k for k in s3.keys(world.id) if f"/{item['id']}." in k and ".thumb." not in k]
        stat = s3.client.stat_object(s3.name, key)
        assert (stat.metadata or {})["Content-Disposition"].startswith(disposition + ";")

    # Until a message attaches them, uploads are their uploader's alone.
    url = "/api/widget/attachments/{}"
    for item in (picture, page, pdf):
        status, body = await bob_w.get(url.format(item["id"]))
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, body = await ann_w.get(url.format(item["id"]))
        assert status == 200 and body["id"] == item["id"]
    status, message = await ann_w.post(
        f"/api/widget/conversations/{cid}/messages",
        {"content": "look", "attachment_ids": [picture["id"], page["id"]]},
    )
    assert status == 201, message
    for reader in (bob_w, ann_w):  # at once, without waiting: media follows the message
        for item in (picture, page):
            status, body = await reader.get(url.format(item["id"]))
            assert status == 200 and body["id"] == item["id"], body
    assert (await bob_w.get(url.format(pdf["id"])))[0] == 404  # still not attached


async def test_bad_uploads_get_the_documented_errors_and_leave_nothing_behind(
    world: World, stack: RunningStack, http: aiohttp.ClientSession, s3: Bucket, nc: Any
) -> None:
    ann, ann_w = await world.user("Ann")
    bob, _ = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    url = f"/api/widget/conversations/{cid}/attachments"

    async def rejected(data: bytes, filename: str | None, status: int, field: str) -> None:
        got, body = await upload(ann_w, cid, data, filename)
        assert got == status, body
        assert field in body["error"]["details"], body

    await rejected(b"", "empty.txt", 422, "file")
    await rejected(EXECUTABLE, "cute-cat.png", 415, "file")
    await rejected(png_bytes()[:-200], "cut.png", 422, "file")
    for name in ("../../etc/passwd.png", "C:\\Users\\ann\\photo.png", "bell\x07.png", ".."):
        await rejected(png_bytes(), name, 422, "filename")
    # A control character sent raw in the part's header: a malformed body.
    raw = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="bell\x07.png"\r\n\r\n'
        + png_bytes()
        + b"\r\n--b--\r\n"
    )
    status, answer = await ann_w.post(
        url, data=raw, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert (status, answer["error"]["code"]) == (400, "invalid_request"), answer
    body, content_type = multipart([("note", None, b"no file here")])
    status, answer = await ann_w.post(url, data=body, headers={"Content-Type": content_type})
    assert (status, answer["error"]["details"]) == (422, {"file": "required"})
    status, answer = await ann_w.post(url, {"file": "not multipart"})
    assert (status, answer["error"]["code"]) == (415, "unsupported_media_type")

    # 200 MB, streamed from a generator without a length: refused at the limit, and the
    # gateway never holds more than a little of it.
    gateway = psutil.Process(stack.pids()["gateway"])
    baseline = gateway.memory_info().rss
    peak = [baseline]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.02):
            peak[0] = max(peak[0], gateway.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    boundary = "big-boundary"

    async def body_stream() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="huge.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        chunk = b"\x00" * MB
        for _ in range(200):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        async with http.post(
            stack.gateway + url,
            data=body_stream(),
            headers={
                **ann_w.headers,
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        ) as response:
            status, answer = response.status, await response.json()
    finally:
        sampling.set()
        sampler.join()
    assert (status, answer["error"]["code"]) == (413, "payload_too_large"), answer
    assert peak[0] - baseline < 64 * MB, f"gateway grew by {(peak[0] - baseline) / MB:.0f} MB"

    assert s3.keys(world.id) == []
    assert await live_uploads(nc) == []


@pytest.mark.faults
async def test_killing_media_during_an_ingest_stores_it_or_leaves_nothing(
    world: World, stack: RunningStack, http: aiohttp.ClientSession, s3: Bucket, nc: Any
) -> None:
    ann, ann_w = await world.user("Ann")
    bob, _ = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    ingests = await nc.subscribe("media.cmd.ingest")  # sees requests beside media's queue
    data = png_bytes((2400, 1800))
    sending = asyncio.create_task(upload(ann_w, cid, data, "big.png"))
    request = await ingests.next_msg(timeout=30)
    attachment_id = json.loads(request.data)["attachment_id"]
    os.kill(stack.pids()["media"], signal.SIGKILL)
    status, body = await sending

    js = nc.jetstream()
    if status == 201:  # it was stored before the kill, and acknowledged
        assert body["id"] == attachment_id
        assert any(attachment_id in k for k in s3.keys(world.id))
    else:
        assert status == 503, body
        # Once its deadline has passed, the restarted media takes back what the dead
        # one wrote; the intent is deleted last, so its deletion marks the end.
        intents = await js.key_value("media_ingests")
        watcher = await intents.watch(attachment_id)
        try:
            while True:
                entry = await watcher.updates(timeout=60)
                if entry is None:  # caught up with what is there: maybe nothing
                    if await _absent(intents, attachment_id):
                        break
                elif entry.operation in ("DEL", "PURGE"):
                    break
        finally:
            await watcher.stop()
        assert s3.keys(world.id) == []
    assert await live_uploads(nc) == []
    await _healthy(http, stack)


async def _absent(kv: Any, key: str) -> bool:
    try:
        entry = await kv.get(key)
    except Exception:
        return True
    return entry is None or not entry.value


async def _healthy(http: aiohttp.ClientSession, stack: RunningStack) -> None:
    """Wait (bounded) until the restarted media answers again, for the tests after this one."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with http.get(stack.gateway + "/healthz") as response:
            if response.status == 200:
                return
        await asyncio.sleep(0.2)
    raise AssertionError("the platform did not become healthy again")
