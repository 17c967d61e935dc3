"""The gateway's browser side without a platform: files, caching, CORS, CSP, room tokens."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from confab.errors import NotFound, RateLimited
from confab_gateway import web as pages
from confab_gateway.consistency import LastWrites
from confab_gateway.errors import error_middleware
from confab_gateway.ratelimit import TokenBuckets
from confab_gateway.settings import GatewaySettings

WIDGET = Path(pages.__file__).parent / "static" / "widget" / "v1"
REPO = Path(__file__).resolve().parents[3]
NPM_PUSHER = REPO / "services/fanout/tests/js/node_modules/pusher-js/dist/web/pusher.min.js"


def settings(**values: str) -> GatewaySettings:
    return GatewaySettings(
        fanout_ws_url="ws://127.0.0.1:6001",
        s3_endpoint="http://127.0.0.1:9333",
        **values,  # type: ignore[arg-type]
    )


async def client_for(config: GatewaySettings) -> TestClient:
    app = web.Application(middlewares=[pages.cors_middleware, error_middleware])
    app["auth"] = None
    app["last_writes"] = LastWrites()
    pages.install(app, config, None)  # type: ignore[arg-type]
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def plain() -> AsyncIterator[TestClient]:
    client = await client_for(settings())
    yield client
    await client.close()


@pytest.fixture
async def with_demo() -> AsyncIterator[TestClient]:
    client = await client_for(settings(demo_api_key="sk_demo_key_for_tests_only"))
    yield client
    await client.close()


async def test_widget_files_are_served_cross_origin_and_revalidated(plain: TestClient) -> None:
    response = await plain.get("/widget/v1/confab-widget.js", headers={"Origin": "https://a.test"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/javascript")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Cache-Control"] == "public, max-age=300, must-revalidate"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    etag = response.headers["ETag"]
    again = await plain.get("/widget/v1/confab-widget.js", headers={"If-None-Match": etag})
    assert again.status == 304
    assert (await plain.get("/widget/v1/widget.css")).headers["Content-Type"].startswith("text/css")

    vendor = await plain.get("/widget/v1/vendor/pusher-8.6.0.min.js")
    assert vendor.status == 200
    assert vendor.headers["Cache-Control"] == "public, max-age=31536000, immutable"

    for missing in ("/widget/v1/nope.js", "/widget/v1/%2e%2e/web.py", "/widget/v2/widget.js"):
        response = await plain.get(missing)
        assert response.status == 404, missing


async def test_the_widget_api_answers_cors_preflights(plain: TestClient) -> None:
    response = await plain.options(
        "/api/widget/conversations",
        headers={
            "Origin": "https://shop.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert "PATCH" in response.headers["Access-Control-Allow-Methods"]
    # Not the tenant or admin API: those are for servers.
    preflight = {"Origin": "https://x.test", "Access-Control-Request-Method": "POST"}
    tenant = await plain.options("/api/v1/users", headers=preflight)
    assert "Access-Control-Allow-Origin" not in tenant.headers


async def test_without_a_demo_key_the_demo_is_not_there(plain: TestClient) -> None:
    page = await plain.get("/demo")
    assert page.status == 404
    assert "CONFAB_DEMO_API_KEY" in await page.text()
    rooms = await plain.post("/demo/api/rooms")
    assert rooms.status == 404
    assert (await rooms.json())["error"]["code"] == "not_found"
    assert (await plain.get("/demo/assets/demo.js")).status == 404


async def test_the_demo_page_has_a_strict_policy_that_allows_the_socket(
    with_demo: TestClient,
) -> None:
    page = await with_demo.get("/demo")
    assert page.status == 200
    assert page.headers["Cache-Control"] == "no-cache"
    csp = page.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self' ws://127.0.0.1:6001"
    assert "http://127.0.0.1:9333" in directives["img-src"]
    assert directives["frame-ancestors"] == "'none'"
    html = await page.text()
    # No inline script or style (the policy would block them), nothing from elsewhere.
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert "style=" not in html and "<style" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    for asset in ("/demo/assets/demo.js", "/demo/assets/demo.css"):
        assert (await with_demo.get(asset)).status == 200


def test_room_tokens_name_one_conversation_and_cannot_be_forged() -> None:
    demo = pages.Demo(settings(demo_api_key="sk_one"), None, None)  # type: ignore[arg-type]
    other = pages.Demo(settings(demo_api_key="sk_two"), None, None)  # type: ignore[arg-type]
    cid = "conv_01h0000000000000000000000a"
    token = demo.room_token(cid)
    assert demo.room_of(token) == cid
    for forged in (
        other.room_token(cid),
        cid,
        cid + ".",
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        demo.room_token("conv_01h0000000000000000000000b").replace(
            "conv_01h0000000000000000000000b", cid
        ),
        "../" + token,
    ):
        with pytest.raises(NotFound):
            demo.room_of(forged)


def test_demo_rooms_are_limited_per_address() -> None:
    buckets = TokenBuckets(rate=1 / 60, burst=3)
    for _ in range(3):
        pages.take_per_address(buckets, "1.2.3.4")
    with pytest.raises(RateLimited) as caught:
        pages.take_per_address(buckets, "1.2.3.4")
    assert 0 < caught.value.retry_after <= 60
    assert buckets.take("5.6.7.8") == 0  # another address has its own bucket


def test_the_widget_never_builds_markup_from_strings() -> None:
    """User data reaches the page as text nodes only (dom.js): no HTML parsing sinks."""
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function"
    )
    static = WIDGET.parent.parent
    for path in [*static.rglob("*.js"), *static.rglob("*.html")]:
        if "vendor" in path.parts:
            continue
        assert not sinks.search(path.read_text()), path


def test_the_vendored_pusher_js_is_the_npm_release() -> None:
    vendored = (WIDGET / "vendor" / "pusher-8.6.0.min.js").read_bytes()
    assert b"Pusher JavaScript Library v8.6.0" in (
        WIDGET / "vendor" / "pusher-8.6.0.LICENCE.txt"
    ).read_bytes() or vendored.startswith(b"/*! For license information")
    if not NPM_PUSHER.exists():
        pytest.skip("pusher-js is not installed under services/fanout/tests/js (npm ci)")
    assert hashlib.sha256(vendored).digest() == hashlib.sha256(NPM_PUSHER.read_bytes()).digest()
