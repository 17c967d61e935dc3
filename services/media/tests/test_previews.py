"""Link previews' fetcher: the egress guard on every hop, limits, and reading a page.

No test connects anywhere but loopback. Refusals of private, link-local and metadata
addresses are shown by the address check and by the resolver hook: names resolve (by a
fixed table standing in for DNS) to such addresses, and the fetch is refused before any
connection; the loopback receiver proves that nothing reached it. Loopback itself is
allowed only where a test says so (``loopback_only``, the test-only setting, which
refuses every other address, public ones too).
"""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from PIL import Image

from confab.contracts.base import Ok
from confab.contracts.media import FetchPreview
from confab.egress import plain_results, refused
from confab.rpc import CallContext
from confab_infra.backends import free_port
from confab_media.domain import Policy
from confab_media.previews import Fetched, Fetcher, Previews, Refused, read_card, with_oembed
from confab_media.settings import MediaSettings


class Table(AbstractResolver):
    """DNS as a fixed table: name -> addresses."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        self.asked.append(host)
        if host not in self.names:
            raise OSError(f"{host} does not resolve")
        return plain_results(host, self.names[host], port)

    async def close(self) -> None:
        pass


class Receiver:
    """A loopback web server that counts what reaches it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.port = free_port()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.routes: dict[str, Any] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        found = self.routes.get(request.path)
        if found is None:
            return web.Response(status=404)
        return await found(request) if asyncio.iscoroutinefunction(found) else found(request)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    runner = web.AppRunner(found.app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", found.port).start()
    yield found
    await runner.cleanup()


def png(width: int = 40, height: int = 20) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


PAGE = """<!doctype html><html><head>
<title>Fallback title</title>
<meta property="og:title" content="  The &amp; Title ">
<meta property="og:description" content="What it is about">
<meta property="og:site_name" content="Example">
<meta property="og:image" content="/img.png">
<link rel="alternate" type="application/json+oembed" href="/oembed.json">
</head><body><meta property="og:title" content="not this"></body></html>"""


async def fetcher(
    names: dict[str, list[str]] | None = None, *, loopback_only: bool, timeout: float = 3.0
) -> Fetcher:
    found = Fetcher(timeout=timeout, loopback_only=loopback_only, resolver=Table(names or {}))
    await found.start()
    return found


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "169.254.169.254", "10.0.0.8", "192.168.0.1", "fd00:ec2::254"],
)
def test_loopback_private_and_metadata_addresses_are_refused(address: str) -> None:
    assert refused(address) is not None


def test_the_test_only_setting_lets_loopback_and_nothing_else_through() -> None:
    assert refused("127.0.0.1", loopback_only=True) is None
    assert refused("::ffff:127.0.0.1", loopback_only=True) is None
    for public in ("93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"):
        assert refused(public) is None
        assert refused(public, loopback_only=True) is not None, public
    for other in ("169.254.169.254", "10.0.0.8", "172.16.0.1", "::", "100.100.100.200"):
        assert refused(other, loopback_only=True) is not None, other


async def test_ip_literals_of_refused_addresses_are_never_requested(receiver: Receiver) -> None:
    guarded = await fetcher(loopback_only=False)
    try:
        for url in (
            f"http://127.0.0.1:{receiver.port}/page",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:169.254.169.254]/",
            "http://10.0.0.1/",
            "http://user:pw@example.com/",
            "ftp://example.com/",
        ):
            with pytest.raises(Refused):
                await guarded.get(url, limit=1000, accept="text/html")
    finally:
        await guarded.stop()
    assert receiver.hits == []


async def test_a_name_resolving_to_a_private_address_is_refused_at_connection(
    receiver: Receiver,
) -> None:
    names = {
        "internal.test": ["10.1.2.3"],
        "metadata.test": ["169.254.169.254"],
        "rebinding.test": ["10.9.9.9", "fe80::1"],
        "home.test": ["127.0.0.1"],  # loopback, not allowed here
    }
    guarded = await fetcher(names, loopback_only=False)
    try:
        for host in names:
            with pytest.raises(Refused, match="resolves only to"):
                await guarded.get(f"http://{host}:{receiver.port}/page", limit=100, accept="*/*")
    finally:
        await guarded.stop()
    assert receiver.hits == []


async def test_every_redirect_is_checked_and_connects_to_the_address_checked(
    receiver: Receiver,
) -> None:
    def to(location: str) -> Any:
        return lambda _r: web.Response(status=302, headers={"Location": location})

    port = receiver.port
    receiver.routes |= {
        "/to-metadata": to("http://169.254.169.254/latest/meta-data/iam"),
        "/to-private-name": to(f"http://internal.test:{port}/page"),
        "/to-ftp": to("ftp://example.com/x"),
        "/to-public": to(f"http://public.test:{port}/page"),
        "/loop": to("/loop"),
        "/hop": to(f"http://page.test:{port}/page"),
        "/page": lambda _r: web.Response(text=PAGE, content_type="text/html"),
    }
    # page.test resolves to loopback (the receiver); internal.test to a private address.
    names = {
        "page.test": ["127.0.0.1"],
        "internal.test": ["10.1.2.3"],
        "public.test": ["93.184.215.14"],  # public: refused too in the test-only mode
    }
    guarded = await fetcher(names, loopback_only=True)
    try:
        for path, why in (
            ("/to-metadata", "metadata"),
            ("/to-private-name", "resolves only to a private address"),
            ("/to-ftp", "http"),
            ("/to-public", "not a loopback address"),
            ("/loop", "redirects"),
        ):
            with pytest.raises(Refused, match=why):
                await guarded.get(f"http://page.test:{port}{path}", limit=10_000, accept="*/*")
        found = await guarded.get(f"http://page.test:{port}/hop", limit=10_000, accept="*/*")
    finally:
        await guarded.stop()
    assert found.url == f"http://page.test:{port}/page" and found.content_type == "text/html"
    # Nothing but the receiver's own paths was ever requested of it.
    assert set(receiver.hits) <= {
        "/to-public",
        "/to-metadata",
        "/to-private-name",
        "/to-ftp",
        "/loop",
        "/hop",
        "/page",
    }
    assert "/page" in receiver.hits


async def test_size_and_time_limits(receiver: Receiver) -> None:
    async def slow(_r: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(text="late")

    receiver.routes |= {
        "/big": lambda _r: web.Response(body=b"x" * 50_000, content_type="text/html"),
        "/slow": slow,
    }
    guarded = await fetcher(loopback_only=True, timeout=0.5)
    try:
        big = await guarded.get(
            f"http://127.0.0.1:{receiver.port}/big", limit=1000, accept="text/html"
        )
        assert len(big.body) == 1000 and big.truncated
        with pytest.raises(Refused, match="timed out"):
            await guarded.get(f"http://127.0.0.1:{receiver.port}/slow", limit=10, accept="*/*")
    finally:
        await guarded.stop()


def test_a_page_s_card_from_open_graph_then_oembed() -> None:
    card = read_card(Fetched("https://example.com/a/b", "text/html", PAGE.encode(), False))
    assert card.title == "The & Title"  # unescaped, trimmed; the <body> tag ignored
    assert card.description == "What it is about" and card.site_name == "Example"
    assert card.image_url == "https://example.com/img.png"
    assert card.oembed_url == "https://example.com/oembed.json"
    bare = read_card(
        Fetched("https://e.com/", "text/html", b"<title> Only\n a title </title>", False)
    )
    assert (bare.title, bare.image_url) == ("Only a title", None)
    filled = with_oembed(bare, b'{"provider_name": "Tube", "thumbnail_url": "/t.jpg"}')
    assert filled.site_name == "Tube" and filled.image_url == "https://e.com/t.jpg"
    assert with_oembed(bare, b"not json") == bare
    deep = "<div>" * 20_000 + "<title>x</title>"
    assert read_card(Fetched("https://e.com/", "text/html", deep.encode(), False)).title == "x"
    assert png()  # the helper the stack test uses makes a real image


async def test_no_job_for_a_workspace_with_previews_off_or_a_refused_url() -> None:
    previews = Previews(
        MediaSettings(),
        None,  # type: ignore[arg-type]  # nothing is stored or asked when declined
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        lambda workspace: Policy(link_previews=workspace != "ws_quiet"),
    )
    ask = FetchPreview(
        workspace_id="ws_quiet",
        conversation_id="conv_1",
        message_id="msg_1",
        sender_id="usr_1",
        version=2,
        url="https://example.com/",
    )
    for cmd in (
        ask,
        msgspec.structs.replace(ask, workspace_id="ws_on", url="http://169.254.169.254/x"),
        msgspec.structs.replace(ask, workspace_id="ws_on", url="http://[::1]:8080/"),
        msgspec.structs.replace(ask, workspace_id="ws_on", message_id="../x"),
    ):
        assert isinstance(await previews.fetch_preview(cmd, CallContext()), Ok)
        assert not previews._jobs, cmd
