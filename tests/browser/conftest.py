"""Browser tests: headless Chromium (Debian's `chromium`) driven by Playwright.

Playwright never downloads a browser here: it launches the system's Chromium by path
(`CONFAB_CHROMIUM`, else `chromium` on PATH, else /usr/bin/chromium). Without one the
tests are skipped, saying so; `.ci/run` installs it when run as root.

The widget is tested as a tenant embeds it: a page of another origin (a small server on
another port of 127.0.0.1) with one script tag from the gateway.
"""

from __future__ import annotations

import fcntl
import html
import io
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from tests.client import Api, new_workspace
from tests.stack import RunningStack

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CONFAB_CHROMIUM"), shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium binary (apt-get install chromium; .ci/run does it as root)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


def png_bytes(
    size: tuple[int, int] = (480, 320), color: tuple[int, int, int] = (79, 70, 229)
) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", size, color)
    for x in range(size[0] // 3, size[0] // 3 * 2):  # a lighter band, so it is visibly a picture
        for y in range(size[1] // 3, size[1] // 3 * 2):
            image.putpixel((x, y), (250, 204, 21))
    image.save(out, "PNG")
    return out.getvalue()


@dataclass
class Person:
    user: dict[str, Any]
    token: str
    api: Api

    @property
    def id(self) -> str:
        return str(self.user["id"])


@dataclass
class Shop:
    """A tenant workspace, people with widget sessions, and their pages."""

    stack: RunningStack
    http: aiohttp.ClientSession
    tenant: Api
    contexts: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)  # every page's, shown if the test fails
    browser: Any = None
    host: str = ""  # the tenant's site: another origin than the gateway

    async def person(self, name: str) -> Person:
        status, user = await self.tenant.post(
            "/api/v1/users", {"external_id": f"{name}-{uuid.uuid4().hex[:8]}", "name": name}
        )
        assert status == 201, user
        status, session = await self.tenant.post("/api/v1/sessions", {"user_id": user["id"]})
        assert status == 201, session
        token = session["token"]
        return Person(user, token, self.tenant.as_(Authorization=f"Bearer {token}"))

    async def conversation(
        self, *people: Person, kind: str = "direct", title: str | None = None
    ) -> str:
        body: dict[str, Any] = {"participant_ids": [p.id for p in people], "type": kind}
        if title:
            body["title"] = title
        status, conv = await self.tenant.post("/api/v1/conversations", body)
        assert status in (200, 201), conv
        return str(conv["id"])

    def allowed(self, url: str) -> bool:
        """Where a page of the widget may connect: the host page, the gateway, the fanout,
        object storage (attachment URLs), and the page's own blob: and data: URLs."""
        if url.startswith(("blob:", "data:")):
            return True
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        info = self.stack.info
        fanout = urlsplit(info["fanout_ws_url"]).netloc
        return origin in (
            self.host,
            info["gateway_url"],
            f"ws://{fanout}",
            f"http://{fanout}",
            "{0.scheme}://{0.netloc}".format(urlsplit(info["s3_endpoint"])),
        )

    def watch(self, page: Any, label: str) -> None:
        # Uncaught exceptions and unhandled rejections (failed requests are not errors:
        # the tests cut the network on purpose).
        page.on("pageerror", lambda error: self.errors.append(f"{label}: {error}"))
        page.on("console", lambda m: self.console.append(f"{label} {m.type}: {m.text}"))
        page.on(
            "request",
            lambda request: None if self.allowed(request.url) else self.foreign.append(request.url),
        )
        page.on(
            "websocket",
            lambda ws: None if self.allowed(ws.url) else self.foreign.append(ws.url),
        )

    async def widget(
        self,
        person: Person | None,
        *,
        conversation_id: str | None = None,
        open_: bool = False,
        viewport: dict[str, int] = DESKTOP,
        label: str = "",
        attributes: dict[str, str] | None = None,
        token: str | None = None,
        mount: str | None = None,
        touch: bool = False,
        locale: str | None = None,
        before: Callable[[Any], Awaitable[None]] | None = None,
    ) -> Any:
        """A page of another site with the widget embedded by one script tag (its
        data-* `attributes` besides the token), or, with `mount`, by that script calling
        ConfabWidget.mount. `before(page)` runs before the page loads (routes, clocks)."""
        context = await self.browser.new_context(
            viewport=viewport, has_touch=touch, is_mobile=touch, locale=locale or "en-US"
        )
        self.contexts.append(context)
        data = dict(attributes or {})
        if token or person:
            data.setdefault("session-token", token or (person.token if person else ""))
        if conversation_id:
            data["conversation-id"] = conversation_id
        if open_:
            data["open"] = "true"
        query = {"api": self.stack.gateway, "data": json.dumps(data)}
        if mount is not None:
            query["mount"] = mount
        page = await context.new_page()
        self.watch(page, label or (person.user["name"] if person else "page"))
        if before is not None:
            await before(page)
        await page.goto(f"{self.host}/?{urlencode(query)}")
        return page

    async def page(self, url: str, *, viewport: dict[str, int] = DESKTOP, label: str = "") -> Any:
        context = await self.browser.new_context(viewport=viewport)
        self.contexts.append(context)
        page = await context.new_page()
        self.watch(page, label or url)
        await page.goto(url)
        return page


HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Example Outfitters</title>
<style>
body {{ margin: 0; font: 16px/1.5 system-ui, sans-serif; background: #f8fafc; color: #0f172a; }}
header {{ padding: 18px 32px; background: #0f172a; color: #fff; font-weight: 700; }}
main {{ padding: 32px; max-width: 720px; }}
</style></head>
<body>
<header>Example Outfitters</header>
<main><h1>Waterproof jacket</h1>
<p>Light, warm and ready for the rain. Questions? Chat with us: the button in the corner.</p>
</main>
<script src="{api}/widget/v1/confab-widget.js" {attributes}></script>
{mount}
</body></html>"""


async def serve_host_site() -> tuple[web.AppRunner, str]:
    """The tenant's own site, which embeds the widget with one script tag (or mounts it
    from a script of its own: the test's, trusted): its runner and address."""

    async def page(request: web.Request) -> web.Response:
        q = request.query
        data = json.loads(q.get("data", "{}"))
        attributes = " ".join(f'data-{k}="{html.escape(v)}"' for k, v in data.items())
        mount = f"<script>{q['mount']}</script>" if "mount" in q else ""
        if not mount:
            attributes += " async"
        body = HOST_PAGE.format(api=html.escape(q["api"]), attributes=attributes, mount=mount)
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
async def host_site() -> AsyncIterator[str]:
    runner, url = await serve_host_site()
    yield url
    await runner.cleanup()


CALL_FAILED = pytest.StashKey[bool]()
SERVICES_SHOWN = ("gateway", "identity", "fanout")  # their logs' tails, when a test fails
LOG_LINES = 60


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Whether the test itself failed, for its fixtures' teardown to read."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed


def show_what_happened(shop: Shop) -> None:
    """The pages' console and the tails of the services' logs, printed in the teardown of
    a failed test (pytest shows them with the failure; a passing test's are dropped)."""
    print("--- the pages' console")
    print("\n".join(shop.console) or "(nothing)")
    logs = shop.stack.data_dir / "logs"
    for name in SERVICES_SHOWN:
        for path in sorted(logs.glob(f"{name}*")):
            lines = path.read_text(errors="replace").splitlines()[-LOG_LINES:]
            print(f"--- the last {len(lines)} lines of {path.name}")
            print("\n".join(lines))


@pytest.fixture
async def shop(
    request: pytest.FixtureRequest,
    stack: RunningStack,
    browser: Any,
    http: aiohttp.ClientSession,
    host_site: str,
) -> AsyncIterator[Shop]:
    admin = Api(http, stack.gateway, stack.admin_headers)
    workspace = await new_workspace(admin, "Example Outfitters")
    found = Shop(stack, http, admin.as_(**{"X-API-Key": workspace["api_key"]}))
    found.browser = browser
    found.host = host_site
    yield found
    if request.node.stash.get(CALL_FAILED, False):
        show_what_happened(found)
    for context in found.contexts:
        await context.close()
    assert not found.foreign, f"requests outside the platform: {found.foreign}"
    assert not found.errors, "\n".join(found.errors)


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / name


# -- what the tests take from npm (tests/browser/js) ---------------------------------------

JS = Path(__file__).resolve().parent / "js"


def npm_package(name: str) -> Path:
    """A package of tests/browser/js/package.json, installed by `npm ci` once (across
    concurrent test sessions too); skips the test without node and npm."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the accessibility checks take axe-core from npm")
    marker = JS / "node_modules" / ".package-lock.json"
    if not marker.exists():
        with (JS / ".npm-install.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not marker.exists():
                subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                    cwd=JS,
                    check=True,
                    capture_output=True,
                    timeout=300,
                )
    return JS / "node_modules" / name


@pytest.fixture(scope="session")
def axe_source() -> str:
    return (npm_package("axe-core") / "axe.min.js").read_text()


async def axe_violations(page: Any, source: str) -> list[str]:
    """axe-core's serious and critical violations on the whole page (the widget's shadow
    root included), one line each."""
    if not await page.evaluate("typeof window.axe === 'object'"):
        # Evaluated through the DevTools protocol, not injected as a tag: pages with a
        # strict CSP (the demo, the dashboard) allow no inline script.
        await page.evaluate(source + "\n;undefined")
    results = await page.evaluate(
        "() => axe.run(document, { resultTypes: ['violations'] }).then(r => r.violations)"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(n["target"]) for n in v["nodes"][:3])
        for v in results
        if v["impact"] in ("serious", "critical")
    ]
