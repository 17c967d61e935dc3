"""Link previews: the Open Graph / oEmbed card of a message's first link.

Where it runs, and why here: media already fetches nothing, but it is the one service
that stores images (re-encoded by Pillow, in the bucket, served by presigned URLs) and
the one whose events say who may read them. Messaging finds the first link when a
message is posted or edited (``confab.links``) and hands the URL over in
``FetchPreview`` (it alone can read the sealed text; the URL is never written to the
log); media fetches the page and its image here, stores the image as an attachment of
the message (``attachment.stored`` then ``attachment.attached``: readers get it like
any attachment, with fresh URLs), and answers messaging with ``AttachPreview``, which
appends ``message.previewed`` if the text is still the one the preview was made for.
Every reader renders it from the one fold as the message's ``message.updated``.

Outbound safety (``confab.egress``, the platform's one address check):

- every URL (the link, each redirect, the oEmbed endpoint, the image) must be plain
  ``http``/``https`` without credentials; an IP literal is checked before any request;
- a host name is resolved by ``GuardedResolver``, which drops every loopback, private,
  link-local, shared, multicast, reserved and cloud-metadata address, and aiohttp
  connects to the addresses it returned: what was checked is what is connected to,
  with no second resolution a rebinding DNS server could answer differently;
- redirects are followed by hand, at most ``MAX_REDIRECTS``, each one checked as the
  first URL was;
- each fetch has a total time limit and reads at most its size limit (a page is cut
  there and parsed as far as it goes; an image beyond it is dropped); answers are asked
  for and read uncompressed (``Accept-Encoding: identity``, no decompression), so the
  limit is on what is held in memory; an image is decoded only up to ``MAX_PIXELS``;
- ``link_preview_loopback_only`` (tests only) lets loopback through and nothing else,
  not even public addresses: a test reaches only what it serves itself.

Pages are cached per URL (``link_preview_cache_seconds``, a bounded LRU, failures
too), so a link posted a hundred times is fetched once; the image is stored once per
message (an attachment belongs to one message). A preview is best effort: the job
runs after ``FetchPreview`` has been answered, and a failure leaves the message
without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import msgspec
from aiohttp.abc import AbstractResolver

from confab import __version__
from confab.aggregate import Executed
from confab.contracts.base import Ok
from confab.contracts.events.media import AttachmentStored, subject
from confab.contracts.events.messaging import Attachment, LinkPreview
from confab.contracts.media import FetchPreview
from confab.contracts.messaging import Actor, AttachPreview
from confab.egress import GuardedResolver, RefusedAddress, check_url, ip_literal, refused
from confab.errors import ConfabError
from confab.ids import is_valid_id, new_id
from confab.logging import get_logger
from confab.rpc import CallContext, RpcClient
from confab.shell import CommandShell, Intent, Route
from confab_media import content, domain
from confab_media.domain import AttachmentState, Policy
from confab_media.handlers import THUMBNAIL_DISPOSITION, disposition
from confab_media.settings import MediaSettings
from confab_media.storage import Storage

log = get_logger("confab.media.previews")

MAX_REDIRECTS = 5
OEMBED_MAX_BYTES = 64 * 1024
CACHE_ENTRIES = 512
CACHE_BYTES = 64 * 1024 * 1024  # images kept in the cache, at most
MAX_PIXELS = 16_000_000  # a preview image decoded (width times height), at most
PENDING_MAX = 256  # jobs waiting for a slot; beyond this a request is declined
TITLE_MAX, DESCRIPTION_MAX, SITE_MAX = 300, 1000, 100
HTML_TYPES = ("text/html", "application/xhtml+xml")
IMAGES = Policy(allowed=("image/png", "image/jpeg", "image/gif", "image/webp"))


class Refused(Exception):
    """A fetch that may not or could not be made (the reason is in the message)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str  # after redirects
    content_type: str  # the media type, lower case, without parameters
    body: bytes
    truncated: bool
    charset: str = "utf-8"


@dataclass(frozen=True, slots=True)
class Card:
    """What a page says about itself."""

    final_url: str
    title: str | None = None
    description: str | None = None
    site_name: str | None = None
    image_url: str | None = None
    oembed_url: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.title or self.description or self.image_url)


# -- fetching ------------------------------------------------------------------------------


class Fetcher:
    """GETs with the egress guard on every hop, a time limit and a size limit."""

    def __init__(
        self,
        *,
        timeout: float,
        loopback_only: bool = False,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.timeout = timeout
        self.loopback_only = loopback_only
        self.resolver = GuardedResolver(
            allow_private=False, loopback_only=loopback_only, inner=resolver
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=self.resolver, limit=32, ttl_dns_cache=10)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={
                "User-Agent": f"Confab-LinkPreview/{__version__} (+link previews)",
                "Accept-Encoding": "identity",
            },
            auto_decompress=False,  # no decompression bomb: the limit is on bytes held
            trust_env=False,  # never through a proxy the environment names
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    def check(self, url: str) -> None:
        """Refused unless ``url`` is one a fetch may start: http(s), no credentials, and
        not an IP literal of a refused address (names are checked at connection)."""
        try:
            host, _port = check_url(url)
        except ConfabError as exc:
            raise Refused(exc.message) from None
        ip = ip_literal(host)
        if ip is not None:
            why = refused(ip, loopback_only=self.loopback_only)
            if why is not None:
                raise Refused(f"{host} is {why}")

    async def get(self, url: str, *, limit: int, accept: str) -> Fetched:
        """``url`` after at most ``MAX_REDIRECTS`` redirects (each checked), its first
        ``limit`` bytes; Refused with the reason otherwise."""
        assert self._session is not None
        deadline = time.monotonic() + self.timeout
        for _ in range(MAX_REDIRECTS + 1):
            self.check(url)
            left = deadline - time.monotonic()
            if left <= 0:
                raise Refused("timed out")
            try:
                async with self._session.get(
                    url,
                    allow_redirects=False,
                    headers={"Accept": accept},
                    timeout=aiohttp.ClientTimeout(total=left),
                ) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location")
                        if not location:
                            raise Refused(f"HTTP {response.status} without a Location")
                        url = urljoin(url, location)
                        continue
                    if response.status != 200:
                        raise Refused(f"HTTP {response.status}")
                    body = await response.content.read(limit + 1)
                    kind = response.content_type.lower()
                    charset = response.charset or "utf-8"
                    return Fetched(url, kind, body[:limit], len(body) > limit, charset)
            except RefusedAddress as exc:
                raise Refused(str(exc)) from None
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, RefusedAddress):
                    raise Refused(str(exc.os_error)) from None
                raise Refused(f"cannot connect: {exc.os_error or exc}") from None
            except TimeoutError:
                raise Refused("timed out") from None
            except (aiohttp.ClientError, ValueError, UnicodeError) as exc:
                raise Refused(f"{type(exc).__name__}: {exc}"[:200]) from None
        raise Refused(f"more than {MAX_REDIRECTS} redirects")


# -- reading a page ------------------------------------------------------------------------


class _Head(HTMLParser):
    """Open Graph, Twitter and plain ``<meta>`` tags, the ``<title>`` and the oEmbed
    discovery link; stops caring at ``<body>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.title: list[str] = []
        self.oembed: str | None = None
        self._in_title = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._done:
            return
        found = {k.lower(): (v or "") for k, v in attrs}
        if tag == "body":
            self._done = True
        elif tag == "title":
            self._in_title = True
        elif tag == "meta":
            key = (found.get("property") or found.get("name") or "").strip().lower()
            if key and "content" in found:
                self.meta.setdefault(key, found["content"])
        elif tag == "link" and self.oembed is None:
            rel = found.get("rel", "").lower().split()
            if "alternate" in rel and found.get("type", "").lower() == "application/json+oembed":
                self.oembed = found.get("href") or None

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "head":
            self._done = True

    def handle_data(self, data: str) -> None:
        if self._in_title and not self._done and len(self.title) < 100:
            self.title.append(data)


def _clip(value: str | None, limit: int) -> str | None:
    if not value:
        return None
    text = " ".join(value.split())
    return (text[: limit - 1] + "…" if len(text) > limit else text) or None


def read_card(fetched: Fetched) -> Card:
    """The card of an HTML page (what it says in its ``<head>``)."""
    try:
        text = fetched.body.decode(fetched.charset, "replace")
    except LookupError:
        text = fetched.body.decode("utf-8", "replace")
    head = _Head()
    with contextlib.suppress(Exception):  # a broken page gives what parsed before it broke
        head.feed(text)
        head.close()
    meta = head.meta
    base = fetched.url

    def first(*keys: str) -> str | None:
        return next((meta[k] for k in keys if meta.get(k, "").strip()), None)

    image = first("og:image:secure_url", "og:image", "og:image:url", "twitter:image")
    return Card(
        final_url=base,
        title=_clip(first("og:title", "twitter:title") or "".join(head.title), TITLE_MAX),
        description=_clip(
            first("og:description", "twitter:description", "description"), DESCRIPTION_MAX
        ),
        site_name=_clip(first("og:site_name", "application-name"), SITE_MAX),
        image_url=urljoin(base, image.strip()) if image else None,
        oembed_url=urljoin(base, head.oembed.strip()) if head.oembed else None,
    )


class OEmbed(msgspec.Struct, kw_only=True):
    title: str | None = None
    provider_name: str | None = None
    author_name: str | None = None
    thumbnail_url: str | None = None


def with_oembed(card: Card, body: bytes) -> Card:
    """``card`` completed by an oEmbed answer (what the page's tags lacked)."""
    try:
        found = msgspec.json.decode(body, type=OEmbed)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return card
    return Card(
        final_url=card.final_url,
        title=card.title or _clip(found.title, TITLE_MAX),
        description=card.description or _clip(found.author_name, DESCRIPTION_MAX),
        site_name=card.site_name or _clip(found.provider_name, SITE_MAX),
        image_url=card.image_url
        or (urljoin(card.final_url, found.thumbnail_url) if found.thumbnail_url else None),
        oembed_url=card.oembed_url,
    )


@dataclass(frozen=True, slots=True)
class Page:
    """A page's card and its image, re-encoded (None: none, or it could not be had)."""

    card: Card
    image: content.Prepared | None


def _size(page: Page | None) -> int:
    image = page.image if page is not None else None
    if image is None:
        return 0
    return len(image.body or b"") + len(image.thumbnail or b"")


# -- the job -------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


class Previews:
    """``FetchPreview``: take the job, fetch (through the cache), store, attach."""

    def __init__(
        self,
        settings: MediaSettings,
        storage: Storage,
        shell: CommandShell[domain.Command, AttachmentState],
        rpc: RpcClient,
        policy: Callable[[str], Policy],
        *,
        resolver: AbstractResolver | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.shell = shell
        self.rpc = rpc
        self.policy = policy
        self.clock = clock
        self.fetcher = Fetcher(
            timeout=settings.link_preview_timeout_seconds,
            loopback_only=settings.link_preview_loopback_only,
            resolver=resolver,
        )
        self._slots = asyncio.Semaphore(settings.link_preview_concurrency)
        self._jobs: set[asyncio.Task[None]] = set()
        self._cache: OrderedDict[str, tuple[float, Page | None]] = OrderedDict()
        self._cached_bytes = 0

    def routes(self) -> list[Route]:
        return [(FetchPreview, self.fetch_preview)]

    async def start(self) -> None:
        await self.fetcher.start()

    async def stop(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        await self.fetcher.stop()

    async def fetch_preview(self, cmd: FetchPreview, _ctx: CallContext) -> Ok:
        """Take the job (or decline it: previews off, a refused URL, too much waiting)."""
        ids = (cmd.workspace_id, cmd.conversation_id, cmd.message_id)
        if not all(is_valid_id(i) for i in ids) or not self.policy(cmd.workspace_id).link_previews:
            return Ok()
        if cmd.sender_id is not None and not is_valid_id(cmd.sender_id):
            return Ok()
        try:
            self.fetcher.check(cmd.url)
        except Refused as exc:
            log.info("link_preview_refused", message_id=cmd.message_id, reason=str(exc))
            return Ok()
        if len(self._jobs) >= PENDING_MAX:
            log.warning("link_preview_declined", message_id=cmd.message_id, reason="busy")
            return Ok()
        job = asyncio.create_task(self._job(cmd))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return Ok()

    async def _job(self, cmd: FetchPreview) -> None:
        try:
            async with self._slots:
                page = await self.page(cmd.url)
                if page is None:
                    return
                image = None
                if page.image is not None and cmd.sender_id is not None:
                    image = await self._store_image(cmd, cmd.sender_id, page.image)
                card = page.card
                preview = LinkPreview(
                    url=cmd.url,
                    final_url=card.final_url if card.final_url != cmd.url else None,
                    title=card.title,
                    description=card.description,
                    site_name=card.site_name,
                    image=image,
                )
                await self.rpc.call(
                    AttachPreview(
                        actor=Actor(workspace_id=cmd.workspace_id, key_id="media"),
                        conversation_id=cmd.conversation_id,
                        message_id=cmd.message_id,
                        version=cmd.version,
                        preview=preview,
                    )
                )
                log.info("link_preview_attached", message_id=cmd.message_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # best effort: the message simply has no preview
            log.warning("link_preview_failed", message_id=cmd.message_id, error=str(exc)[:300])

    async def page(self, url: str) -> Page | None:
        """The page at ``url``, from the cache when it is fresh there (failures too)."""
        now = time.monotonic()
        cached = self._cache.get(url)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(url)
            return cached[1]
        found: Page | None
        try:
            found = await self._fetch_page(url)
        except Refused as exc:
            log.info("link_preview_refused", url_length=len(url), reason=str(exc))
            found = None
        self._forget(url)
        self._cache[url] = (now + self.settings.link_preview_cache_seconds, found)
        self._cached_bytes += _size(found)
        while len(self._cache) > CACHE_ENTRIES or self._cached_bytes > CACHE_BYTES:
            self._forget(next(iter(self._cache)))
        return found

    def _forget(self, url: str) -> None:
        gone = self._cache.pop(url, None)
        if gone is not None:
            self._cached_bytes -= _size(gone[1])

    async def _fetch_page(self, url: str) -> Page | None:
        s = self.settings
        fetched = await self.fetcher.get(
            url, limit=s.link_preview_max_html_bytes, accept="text/html,application/xhtml+xml"
        )
        if fetched.content_type not in HTML_TYPES:
            return None
        card = await asyncio.to_thread(read_card, fetched)  # parsing is CPU work
        if card.oembed_url and (not card.title or not card.image_url):
            with contextlib.suppress(Refused):
                answer = await self.fetcher.get(
                    card.oembed_url, limit=OEMBED_MAX_BYTES, accept="application/json"
                )
                card = with_oembed(card, answer.body)
        if card.empty:
            return None
        image = None
        if card.image_url:
            try:
                image = await self._fetch_image(card.image_url)
            except Refused as exc:
                log.info("link_preview_image_refused", reason=str(exc))
        return Page(card, image)

    async def _fetch_image(self, url: str) -> content.Prepared | None:
        """The image, checked by content and re-encoded from its pixels (as uploads are)."""
        s = self.settings
        limit = s.link_preview_max_image_bytes
        fetched = await self.fetcher.get(url, limit=limit, accept="image/*")
        if fetched.truncated or not fetched.body:
            raise Refused(f"the image is larger than {s.link_preview_max_image_bytes} bytes")

        def prepare() -> content.Prepared:
            with tempfile.TemporaryDirectory(prefix="confab-preview-") as tmp:
                path = Path(tmp) / "image"
                path.write_bytes(fetched.body)
                return content.prepare(
                    path,
                    Policy(max_bytes=s.link_preview_max_image_bytes, allowed=IMAGES.allowed),
                    max_pixels=min(s.max_image_pixels, MAX_PIXELS),
                    thumbnail_size=s.thumbnail_size,
                )

        try:
            return await asyncio.to_thread(prepare)
        except ConfabError as exc:
            raise Refused(f"the image: {exc.message}") from None

    async def _store_image(
        self, cmd: FetchPreview, sender_id: str, image: content.Prepared
    ) -> Attachment | None:
        """The image as an attachment of the message: stored, then attached to it."""
        if image.body is None:
            return None
        attachment_id = new_id("att")
        ws, ext = cmd.workspace_id, image.file_type.ext
        key = domain.object_key(ws, attachment_id, ext)
        filename = f"preview.{ext}"
        mime = image.file_type.mime
        await self.storage.put_bytes(
            key, image.body, domain.served_type(mime), disposition(filename, mime, True)
        )
        thumb_key = None
        if image.thumbnail is not None and image.thumbnail_ext:
            thumb_key = domain.thumbnail_key(ws, attachment_id, image.thumbnail_ext)
            await self.storage.put_bytes(
                thumb_key,
                image.thumbnail,
                image.thumbnail_type or "image/jpeg",
                THUMBNAIL_DISPOSITION,
            )
        stored = AttachmentStored(
            workspace_id=ws,
            attachment_id=attachment_id,
            conversation_id=cmd.conversation_id,
            uploader_id=sender_id,
            filename=filename,
            content_type=mime,
            size=image.size,
            width=image.width,
            height=image.height,
            key=key,
            thumbnail_key=thumb_key,
            thumbnail_content_type=image.thumbnail_type if thumb_key else None,
            sha256=image.sha256,
            at=self.clock(),
            reencoded=True,
        )
        await self._run(ws, attachment_id, domain.StoreAttachment(stored=stored), "stored")
        attach = domain.Attach(
            conversation_id=cmd.conversation_id,
            sender_id=sender_id,
            message_id=cmd.message_id,
            now=self.clock(),
        )
        done = await self._run(ws, attachment_id, attach, "attached")
        if done.state.attached is None:
            return None
        return Attachment(
            id=attachment_id,
            filename=filename,
            content_type=mime,
            size=image.size,
            width=image.width,
            height=image.height,
        )

    async def _run(
        self, workspace_id: str, attachment_id: str, command: domain.Command, what: str
    ) -> Executed[AttachmentState]:
        where = Intent(
            subject(workspace_id, attachment_id),
            command,
            workspace_id,
            "media",
            f"{what}:{attachment_id}",
        )
        return await self.shell.run(where, CallContext())
