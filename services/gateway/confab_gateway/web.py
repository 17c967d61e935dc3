"""The browser side of the gateway: the demo page and the embeddable widget.

- ``GET /widget/v1/…``: the widget (plain ES modules, CSS, JSON catalogues, no
  build step) and its vendored libraries. Cross-origin readable
  (``Access-Control-Allow-Origin: *``): a tenant embeds it on its own site with one
  script tag. Every file is read once at start and kept compressed: gzip (made
  then) and brotli (committed under ``static/widget/brotli/`` by
  ``node static/widget/compress.mjs``; a copy whose source changed since is not
  used), chosen by ``Accept-Encoding``, with ``Vary: Accept-Encoding`` and an ETag
  per encoding. The loader ``confab-widget.js`` is revalidated by ETag after five
  minutes and names the build (a hash of every other file) it loads:
  ``/widget/v1/<build>/…`` is the same files cached for a year (``immutable``), so a
  deploy is picked up at the loader's next revalidation and nothing else is asked
  again. Unversioned paths are revalidated too, except the vendored libraries,
  whose version is in their names.
- ``GET /demo``: the public demo page, with a strict Content-Security-Policy
  (scripts and styles from here only; the fanout's socket; images from here and
  from where attachment URLs point). ``POST /demo/api/rooms`` creates a room in
  the demo workspace (the key in ``CONFAB_DEMO_API_KEY``) with its first guest;
  ``POST /demo/api/rooms/{room}/guests`` lets whoever holds the room's link in as
  a new guest. A room token is the conversation id signed with a key derived
  from the demo API key, so rooms need no state of their own and a link cannot
  be forged for another conversation. Both are rate limited per address. They
  are the demo page's own endpoints, not the public API, so ``/openapi.json``
  leaves them out. Without a demo key all of ``/demo`` is 404.
- ``GET /dashboard``: the staff dashboard (plain ES modules under
  ``/dashboard/assets/``, no build), with the demo page's Content-Security-Policy.
  Its HTML is public; everything it shows comes from ``/dashboard/api`` and the
  tenant API under the staff member's cookie session (``confab_gateway.dashboard``).
- A middleware answers CORS for ``/api/widget/`` (bearer tokens, never cookies,
  so any origin may call it) and ``/widget/``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import mimetypes
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from confab.addresses import TrustedProxies
from confab.contracts.base import Ok
from confab.contracts.identity import (
    ApiKeyPrincipal,
    IssueSession,
    Session,
    SessionInput,
    UpsertUser,
    UserInput,
    UserSaved,
)
from confab.contracts.messaging import (
    Actor,
    AddParticipant,
    ConversationInput,
    ConversationSaved,
    CreateConversation,
)
from confab.errors import NotFound, RateLimited, Unauthorized, Unavailable
from confab.ids import is_valid_id
from confab.rpc import RpcClient
from confab_gateway.auth import Authenticator
from confab_gateway.consistency import LastWrites
from confab_gateway.ratelimit import TokenBuckets, retry_after
from confab_gateway.settings import GatewaySettings

STATIC = Path(__file__).parent / "static"
WIDGET_PREFIX = "/widget/v1/"
DEMO_ASSETS = "/demo/assets/"
DASHBOARD_ASSETS = "/dashboard/assets/"
GUEST_TTL_SECONDS = 24 * 3600
DEMO_DISABLED = (
    "The demo is not enabled on this gateway: it needs CONFAB_DEMO_API_KEY "
    "(confab up sets it to the demo workspace's key)."
)

_encoder = msgspec.json.Encoder()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- static files --------------------------------------------------------------------------


REVALIDATE = "public, max-age=300, must-revalidate"
IMMUTABLE = "public, max-age=31536000, immutable"
LOADER = "confab-widget.js"
BUILD_MARK = b"__CONFAB_BUILD__"
COMPRESSIBLE = ("text/", "application/json", "image/svg+xml")


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str  # of the content; each encoding's ETag adds its name
    cache_control: str
    gzip: bytes | None = None
    br: bytes | None = None

    def encoded(self, accept: str) -> tuple[bytes, str | None]:
        """The body in the best encoding the client accepts, and that encoding's name."""
        wanted = _accepted(accept)
        for name, body in (("br", self.br), ("gzip", self.gzip)):
            if body is not None and wanted.get(name, wanted.get("*", 0.0)) > 0:
                return body, name
        return self.body, None

    @property
    def compressed(self) -> bool:
        return self.gzip is not None or self.br is not None


def make_asset(
    body: bytes, content_type: str, cache_control: str, br: bytes | None = None
) -> Asset:
    gz = None
    if content_type.startswith(COMPRESSIBLE):
        gz = gzip.compress(body, compresslevel=9, mtime=0)
        if len(gz) >= len(body):
            gz = None
    return Asset(
        body=body,
        content_type=content_type,
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        cache_control=cache_control,
        gzip=gz,
        br=br if br is not None and len(br) < len(body) else None,
    )


def load_assets(folder: Path, prefix: str, brotli: Path | None = None) -> dict[str, Asset]:
    """Every file under ``folder``, read once, by URL path: nothing else is ever served.
    ``brotli``: a folder of precompressed copies with a ``manifest.json`` naming the
    SHA-256 of each one's source; a copy whose source changed since is left out."""
    manifest = _brotli_manifest(brotli)
    assets = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        name = path.relative_to(folder).as_posix()
        br = None
        entry = manifest.get(name)
        if brotli is not None and entry and entry == hashlib.sha256(body).hexdigest():
            br = (brotli / (name + ".br")).read_bytes()
        # The vendored libraries carry their versions in their names: they never change.
        cache = IMMUTABLE if name.startswith("vendor/") else REVALIDATE
        assets[prefix + name] = make_asset(body, _content_type(path), cache, br)
    return assets


def _brotli_manifest(folder: Path | None) -> dict[str, str]:
    if folder is None or not (folder / "manifest.json").is_file():
        return {}
    loaded = msgspec.json.decode((folder / "manifest.json").read_bytes(), type=dict[str, str])
    return loaded


def versioned(assets: dict[str, Asset], prefix: str) -> dict[str, Asset]:
    """The widget's files under ``<prefix><build>/`` too, cached for a year: the build is
    a hash of every file but the loader, whose ``__CONFAB_BUILD__`` names it."""
    digest = hashlib.sha256()
    for path, asset in sorted(assets.items()):
        if path != prefix + LOADER:
            digest.update(path.encode() + b"\0" + asset.etag.encode() + b"\0")
    build = digest.hexdigest()[:16]
    result = dict(assets)
    for path, asset in assets.items():
        if path == prefix + LOADER:
            loader = asset.body.replace(BUILD_MARK, build.encode())
            result[path] = make_asset(loader, asset.content_type, REVALIDATE)
        else:
            copy = Asset(
                asset.body, asset.content_type, asset.etag, IMMUTABLE, asset.gzip, asset.br
            )
            result[prefix + build + "/" + path.removeprefix(prefix)] = copy
    return result


def _accepted(header: str) -> dict[str, float]:
    """``Accept-Encoding`` as {coding: q}."""
    found: dict[str, float] = {}
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        if not name:
            continue
        q = 1.0
        key, _, value = params.strip().partition("=")
        if key.strip() == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        found[name.strip().lower()] = q
    return found


def _content_type(path: Path) -> str:
    known = {
        ".js": "text/javascript; charset=utf-8",
        ".mjs": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".html": "text/html; charset=utf-8",
        ".svg": "image/svg+xml",
        ".txt": "text/plain; charset=utf-8",
        ".json": "application/json",
        ".ts": "text/plain; charset=utf-8",
    }
    guessed = mimetypes.guess_type(path.name)[0]
    return known.get(path.suffix) or guessed or "application/octet-stream"


def asset_response(request: web.Request, asset: Asset, **headers: str) -> web.Response:
    body, encoding = asset.encoded(request.headers.get("Accept-Encoding", ""))
    etag = asset.etag if encoding is None else f'{asset.etag[:-1]}-{encoding}"'
    common = {
        "ETag": etag,
        "Cache-Control": asset.cache_control,
        "X-Content-Type-Options": "nosniff",
        **headers,
    }
    if asset.compressed:
        common["Vary"] = "Accept-Encoding"
    # Any encoding's ETag of the same content matches (they differ only in transfer).
    if asset.etag[:-1] in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=common)
    response = web.Response(body=body, headers=common)
    response.headers["Content-Type"] = asset.content_type
    if encoding is not None:
        response.headers["Content-Encoding"] = encoding
    return response


# -- CORS for the widget -------------------------------------------------------------------

CORS_PREFIXES = ("/api/widget/", WIDGET_PREFIX)
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Idempotent-Replayed, Retry-After, X-Request-Id",
}
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Idempotency-Key, X-Request-Id",
    "Access-Control-Max-Age": "600",
}


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(CORS_PREFIXES):
        return await handler(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(status=204, headers=PREFLIGHT_HEADERS)
    response = await handler(request)
    response.headers.update(CORS_HEADERS)
    return response


# -- the demo: rooms and guests ------------------------------------------------------------


class Guest(msgspec.Struct, kw_only=True, frozen=True):
    user_id: str
    name: str
    token: str
    expires_at: datetime


class DemoRoom(msgspec.Struct, kw_only=True, frozen=True):
    conversation_id: str
    room_token: str
    # Relative to the gateway; the page shows it absolute.
    link: str
    guest: Guest


def take_per_address(buckets: TokenBuckets, address: str) -> None:
    """The demo's endpoints are public: limit them per client address."""
    wait = buckets.take(address)
    if wait:
        raise RateLimited(
            "Too many demo rooms or guests from your address; try again shortly.",
            retry_after=retry_after(wait),
        )


ADJECTIVES = (
    "Amber", "Brave", "Calm", "Clever", "Coral", "Dandy", "Eager", "Gentle", "Happy",
    "Jolly", "Kind", "Lively", "Lucky", "Merry", "Nimble", "Plucky", "Quiet", "Sunny",
    "Swift", "Teal", "Witty", "Zesty",
)  # fmt: skip
ANIMALS = (
    "Badger", "Beaver", "Crane", "Dolphin", "Falcon", "Fox", "Gecko", "Heron", "Koala",
    "Lynx", "Marten", "Otter", "Owl", "Panda", "Puffin", "Raven", "Seal", "Stoat", "Tiger",
    "Walrus", "Wren", "Yak",
)  # fmt: skip


class Demo:
    """Rooms in the demo workspace, with the demo API key's authority."""

    def __init__(
        self,
        settings: GatewaySettings,
        rpc: RpcClient,
        auth: Authenticator,
        last_writes: LastWrites | None = None,
    ) -> None:
        self.api_key = settings.demo_api_key
        self.rpc = rpc
        self.auth = auth
        # The guest's first reads (same workspace) wait for the room to be in the read model.
        self.last_writes = last_writes or LastWrites()
        # Room tokens are signed with a key of their own, derived from the API key.
        self.signing_key = hashlib.sha256(b"confab-demo-room\0" + self.api_key.encode()).digest()
        # 10 rooms at once then one per 6 s; 40 guests at once then one per 2 s.
        self.room_limit = TokenBuckets(rate=1 / 6, burst=10, max_keys=10_000)
        self.guest_limit = TokenBuckets(rate=1 / 2, burst=40, max_keys=10_000)

    @property
    def enabled(self) -> bool:
        return bool(self.api_key)

    def room_token(self, conversation_id: str) -> str:
        mac = hmac.new(self.signing_key, conversation_id.encode(), hashlib.sha256).digest()
        return conversation_id + "." + base64.urlsafe_b64encode(mac[:18]).decode()

    def room_of(self, token: str) -> str:
        """The conversation a room token names; 404 for anything not signed here."""
        conversation_id, _, _mac = token.partition(".")
        if is_valid_id(conversation_id) and hmac.compare_digest(
            token.encode(), self.room_token(conversation_id).encode()
        ):
            return conversation_id
        raise NotFound("This room link is not valid; create a new room.")

    async def actor(self) -> Actor:
        try:
            principal: ApiKeyPrincipal = await self.auth.api_key(self.api_key)
        except Unauthorized:
            raise Unavailable(
                "The demo workspace's API key (CONFAB_DEMO_API_KEY) is not valid.",
                retry_after=60,
            ) from None
        return Actor(workspace_id=principal.workspace_id, key_id=principal.key_id)

    async def new_guest(self, actor: Actor, correlation: str) -> tuple[str, str]:
        name = f"{secrets.choice(ADJECTIVES)} {secrets.choice(ANIMALS)}"
        saved: UserSaved = await self.rpc.call(
            UpsertUser(
                workspace_id=actor.workspace_id,
                input=UserInput(external_id=f"demo-guest-{secrets.token_hex(8)}", name=name),
                actor="demo",
            ),
            correlation=correlation,
        )
        return saved.user.id, saved.user.name

    async def session(self, actor: Actor, user_id: str, correlation: str) -> Guest:
        session: Session = await self.rpc.call(
            IssueSession(
                workspace_id=actor.workspace_id,
                input=SessionInput(user_id=user_id, ttl_seconds=GUEST_TTL_SECONDS),
                actor="demo",
            ),
            correlation=correlation,
        )
        return Guest(
            user_id=session.user.id,
            name=session.user.name,
            token=session.token,
            expires_at=session.expires_at,
        )

    async def create_room(self, correlation: str) -> DemoRoom:
        actor = await self.actor()
        user_id, _ = await self.new_guest(actor, correlation)
        saved: ConversationSaved = await self.rpc.call(
            CreateConversation(
                actor=actor,
                input=ConversationInput(
                    participant_ids=[user_id],
                    type="group",
                    title="Demo room",
                    metadata={"demo": True},
                ),
            ),
            correlation=correlation,
        )
        self.last_writes.wrote(actor, saved.stream_seq)
        guest = await self.session(actor, user_id, correlation)
        return self._room(saved.conversation.id, guest)

    async def join(self, token: str, correlation: str) -> DemoRoom:
        conversation_id = self.room_of(token)
        actor = await self.actor()
        user_id, _ = await self.new_guest(actor, correlation)
        added: Ok = await self.rpc.call(
            AddParticipant(actor=actor, conversation_id=conversation_id, user_id=user_id),
            correlation=correlation,
        )
        self.last_writes.wrote(actor, added.seq)
        guest = await self.session(actor, user_id, correlation)
        return self._room(conversation_id, guest)

    def _room(self, conversation_id: str, guest: Guest) -> DemoRoom:
        token = self.room_token(conversation_id)
        return DemoRoom(
            conversation_id=conversation_id,
            room_token=token,
            link=f"/demo#room={token}",
            guest=guest,
        )


def _origin(url: str) -> str:
    """``scheme://host:port`` of a URL, for a CSP source; "" when it is not one."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        return ""
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def content_security_policy(settings: GatewaySettings) -> str:
    sockets = [_origin(settings.fanout_ws_url)]
    images = [_origin(settings.s3_public_endpoint), _origin(settings.s3_endpoint)]
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src " + " ".join(["'self'", "data:", "blob:", *filter(None, images)]),
            "connect-src " + " ".join(["'self'", *filter(None, sockets)]),
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


# -- routes --------------------------------------------------------------------------------


def install(app: web.Application, settings: GatewaySettings, rpc: RpcClient) -> None:
    """Add the widget's files, the demo page and its endpoints to the gateway's app."""
    widget = STATIC / "widget"
    widget_assets = versioned(
        load_assets(widget / "v1", WIDGET_PREFIX, widget / "brotli"), WIDGET_PREFIX
    )
    demo_assets = load_assets(STATIC / "demo", DEMO_ASSETS)
    demo_page = demo_assets.pop(DEMO_ASSETS + "index.html")
    demo_page = make_asset(demo_page.body, demo_page.content_type, "no-cache")
    dashboard_assets = load_assets(STATIC / "dashboard", DASHBOARD_ASSETS)
    dashboard_page = dashboard_assets.pop(DASHBOARD_ASSETS + "index.html")
    dashboard_page = make_asset(dashboard_page.body, dashboard_page.content_type, "no-cache")
    page_headers = {
        "Content-Security-Policy": content_security_policy(settings),
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }

    rooms = Demo(settings, rpc, app["auth"], app["last_writes"])
    proxies = TrustedProxies(settings.trusted_proxies)

    def demo() -> Demo:
        if not rooms.enabled:
            raise NotFound(DEMO_DISABLED)
        return rooms

    async def widget_file(request: web.Request) -> web.Response:
        asset = widget_assets.get(request.path)
        if asset is None:
            raise NotFound("No such widget file.")
        return asset_response(request, asset)

    async def demo_file(request: web.Request) -> web.Response:
        demo()
        asset = demo_assets.get(request.path)
        if asset is None:
            raise NotFound("No such file.")
        return asset_response(request, asset)

    async def demo_index(request: web.Request) -> web.StreamResponse:
        if not settings.demo_api_key:
            return web.Response(status=404, text=DEMO_DISABLED + "\n")
        return asset_response(request, demo_page, **page_headers)

    async def dashboard_file(request: web.Request) -> web.Response:
        asset = dashboard_assets.get(request.path)
        if asset is None:
            raise NotFound("No such file.")
        return asset_response(request, asset)

    async def dashboard_index(request: web.Request) -> web.StreamResponse:
        return asset_response(request, dashboard_page, **page_headers)

    async def create_room(request: web.Request) -> web.Response:
        d = demo()
        take_per_address(d.room_limit, proxies.client(request))
        room = await d.create_room(request.get("correlation", ""))
        return _json(room, 201)

    async def join_room(request: web.Request) -> web.Response:
        d = demo()
        take_per_address(d.guest_limit, proxies.client(request))
        room = await d.join(request.match_info["room"], request.get("correlation", ""))
        return _json(room, 201)

    app.add_routes(
        [
            web.get(WIDGET_PREFIX + "{path:.+}", widget_file),
            web.get("/demo", demo_index),
            web.get(DEMO_ASSETS + "{name}", demo_file),
            web.post("/demo/api/rooms", create_room),
            web.post("/demo/api/rooms/{room}/guests", join_room),
            web.get("/dashboard", dashboard_index),
            web.get("/dashboard/", dashboard_index),
            web.get(DASHBOARD_ASSETS + "{path:.+}", dashboard_file),
        ]
    )


def _json(body: Any, status: int) -> web.Response:
    return web.Response(
        body=_encoder.encode(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
