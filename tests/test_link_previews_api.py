"""Link previews end to end: a message's first link, fetched by media from a page this
test serves on loopback (the stack runs with the test-only loopback allowance), arrives
as the message's ``message.updated`` with the card and a re-encoded image in S3; history
shows it with fresh URLs; an edit drops it. Refusals of private and metadata addresses
are shown in ``services/media/tests/test_previews.py`` (the address check and the
resolver hook), never by connecting to such addresses."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from confab_infra.backends import free_port
from confab_media.domain import Policy, parse_policies
from tests.client import Api, new_workspace
from tests.stack import RunningStack
from tests.test_authority import sockets, three
from tests.test_media_api import Bucket, s3
from tests.test_messaging_api import World, send
from tests.waiting import until

__all__ = ["s3", "sockets"]  # fixtures used here

PAGE = """<html><head><meta property="og:title" content="Cabin in the woods">
<meta property="og:description" content="Sleeps four">
<meta property="og:image" content="/photo.png"></head><body>hello</body></html>"""


@pytest.fixture
async def world(stack: RunningStack, http: aiohttp.ClientSession) -> World:
    admin = Api(http, stack.gateway, stack.admin_headers)
    return World(admin, await new_workspace(admin))


class Site:
    """A page with an Open Graph card and its image, on loopback; counts its requests."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: list[str] = []
        picture = io.BytesIO()
        Image.new("RGB", (40, 20), (200, 30, 30)).save(picture, "PNG")
        self.pages = {
            "/cabin": (PAGE.encode(), "text/html"),
            "/photo.png": (picture.getvalue(), "image/png"),
        }

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        body, kind = self.pages[request.path]
        return web.Response(body=body, content_type=kind)


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    found = Site()
    app = web.Application()
    for path in found.pages:
        app.router.add_get(path, found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", found.port).start()
    yield found
    await runner.cleanup()


async def test_a_link_preview_arrives_as_message_updated_and_history_shows_it(
    world: World, sockets: Any, site: Site, http: aiohttp.ClientSession
) -> None:
    (_ann, ann_w), (_bob, bob_w), _cat, cid = await three(world)
    sock = await sockets()
    await sock.join(bob_w, f"private-conversation.{cid}")
    url = f"http://127.0.0.1:{site.port}/cabin"
    posted = await send(ann_w, cid, f"Look at this: {url}. Nice?")
    assert posted["link_preview"] is None  # it comes afterwards

    frame = await preview_arrives(sock, posted["id"])
    preview = frame["data"]["link_preview"]
    assert preview["url"] == url  # without the sentence's full stop
    assert (preview["title"], preview["description"]) == ("Cabin in the woods", "Sleeps four")
    image = preview["image"]
    assert (image["width"], image["height"], image["content_type"]) == (40, 20, "image/png")
    assert image["url"] is None  # frames carry no URLs

    base = f"/api/widget/conversations/{cid}"
    # History shows it once the read model has the event the frame was made from.
    shown = await shown_in_history(bob_w, cid, posted["id"], lambda m: m["link_preview"])
    fresh = shown["link_preview"]["image"]["url"]
    assert fresh
    async with http.get(fresh) as response:
        assert response.status == 200
        body = await response.read()
    with Image.open(io.BytesIO(body)) as picture:  # re-encoded by media, served from S3
        assert (picture.format, picture.size) == ("PNG", (40, 20))
    status, again = await bob_w.get(f"/api/widget/attachments/{image['id']}")
    assert status == 200 and again["url"], again
    # The same link again: from media's cache (the page is not fetched twice).
    fetched = site.hits.count("/cabin")
    second = await send(bob_w, cid, url)
    await preview_arrives(sock, second["id"])
    assert site.hits.count("/cabin") == fetched == 1

    # An edit takes the old text's preview away.
    status, edited = await ann_w.patch(f"{base}/messages/{posted['id']}", {"content": "no link"})
    assert status == 200 and edited["link_preview"] is None
    status, history = await bob_w.get(f"{base}/messages")
    (shown,) = [m for m in history["data"] if m["id"] == posted["id"]]
    assert shown["link_preview"] is None


async def preview_arrives(sock: Any, message_id: str) -> dict[str, Any]:
    """The ``message.updated`` frame that brings the message's preview (deadline 20 s)."""
    return dict(
        await sock.wait(
            lambda f: (
                f["event"] == "message.updated"
                and f["data"]["id"] == message_id
                and f["data"].get("link_preview") is not None
            ),
            timeout=20,
        )
    )


async def shown_in_history(
    widget: Api, cid: str, message_id: str, ready: Any, timeout: float = 10.0
) -> dict[str, Any]:
    """The message as history shows it, once ``ready(message)`` (deadline ``timeout``)."""

    async def shown() -> dict[str, Any] | None:
        status, history = await widget.get(f"/api/widget/conversations/{cid}/messages")
        assert status == 200, history
        (found,) = [m for m in history["data"] if m["id"] == message_id]
        return dict(found) if ready(found) else None

    return dict(await until(shown, f"{message_id} as history shows it", timeout))


async def test_the_tenant_turns_link_previews_off_and_on_for_its_workspace(
    world: World, sockets: Any, site: Site
) -> None:
    (_ann, ann_w), (_bob, bob_w), _cat, cid = await three(world)
    route = "/api/v1/settings/link-previews"
    assert await world.tenant.get(route) == (200, {"enabled": True})
    for bad in ({}, {"enabled": "no"}, {"enabled": True, "more": 1}):
        status, body = await world.tenant.call("PUT", route, bad)
        assert status == 422, (bad, body)
    assert (await ann_w.get(route))[0] == 401  # a widget session is not the tenant
    assert (await ann_w.call("PUT", route, {"enabled": False}))[0] == 401
    assert await world.tenant.call("PUT", route, {"enabled": False}) == (200, {"enabled": False})
    assert await world.tenant.get(route) == (200, {"enabled": False})

    sock = await sockets()
    await sock.join(bob_w, f"private-conversation.{cid}")
    off = await send(ann_w, cid, f"http://127.0.0.1:{site.port}/cabin?while=off")
    assert await world.tenant.call("PUT", route, {"enabled": True}) == (200, {"enabled": True})
    on = await send(ann_w, cid, f"http://127.0.0.1:{site.port}/cabin?while=on")
    await preview_arrives(sock, on["id"])
    # Only the message sent while previews were on was fetched and got a card.
    assert site.hits.count("/cabin") == 1
    shown = await shown_in_history(bob_w, cid, off["id"], lambda m: True)
    assert shown["link_preview"] is None


def test_previews_are_switched_per_workspace() -> None:
    default = Policy(link_previews=True)
    found = parse_policies('{"ws_quiet": {"link_previews": false}, "ws_big": {}}', default)
    assert found["ws_quiet"].link_previews is False
    assert found["ws_big"].link_previews is True


async def preview_image_in_s3(
    widget: Api, cid: str, message_id: str, s3: Bucket, workspace_id: str
) -> str:
    """The id of the message's preview image, once history shows it and S3 holds it."""
    shown = await shown_in_history(
        widget, cid, message_id, lambda m: (m["link_preview"] or {}).get("image"), timeout=20
    )
    image_id = str(shown["link_preview"]["image"]["id"])
    assert [k for k in s3.keys(workspace_id) if f"/{image_id}." in k]
    return image_id


async def gone(s3: Bucket, workspace_id: str, image_id: str, reader: Api) -> None:
    """Media removes a deleted message's (or an erased user's) objects, then records the
    attachment's deletion, asynchronously as for every attachment (``MessageLinks``,
    ``ErasedFiles``): wait for both, with a deadline."""

    async def both_gone() -> bool:
        in_s3 = [k for k in s3.keys(workspace_id) if f"/{image_id}." in k]
        return not in_s3 and (await reader.get(f"/api/widget/attachments/{image_id}"))[0] == 404

    await until(both_gone, f"{image_id} gone from S3 and no longer served", 15)


async def test_a_preview_image_goes_with_its_message_and_its_erased_author(
    world: World, site: Site, s3: Bucket
) -> None:
    (_ann, ann_w), (_bob, bob_w), (cat, cat_w), cid = await three(world)
    url = f"http://127.0.0.1:{site.port}/cabin"
    ws = world.workspace["id"]
    base = f"/api/widget/conversations/{cid}/messages"
    kept = await send(bob_w, cid, f"mine stays: {url}")
    doomed = await send(ann_w, cid, f"see {url}")
    theirs = await send(cat_w, cid, f"and {url}")
    kept_image = await preview_image_in_s3(bob_w, cid, kept["id"], s3, ws)
    doomed_image = await preview_image_in_s3(bob_w, cid, doomed["id"], s3, ws)
    cat_image = await preview_image_in_s3(bob_w, cid, theirs["id"], s3, ws)

    # Deleted by its author: the preview's image is deleted like an attachment.
    assert (await ann_w.delete(f"{base}/{doomed['id']}"))[0] == 204
    await gone(s3, ws, doomed_image, bob_w)
    # Its author erased: their messages' preview images go with their data.
    assert (await world.tenant.delete(f"/api/v1/users/{cat['id']}"))[0] == 204
    await gone(s3, ws, cat_image, bob_w)
    # Nobody else's.
    assert [k for k in s3.keys(ws) if f"/{kept_image}." in k]
    assert (await bob_w.get(f"/api/widget/attachments/{kept_image}"))[0] == 200
