"""The widget's files as the gateway serves them (no browser, no platform): compressed
(gzip and brotli, Vary, an ETag per encoding), versioned and cached for a year, the
vendored libraries as npm publishes them, and the README's embedding section complete."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from confab_gateway import web as pages
from confab_gateway.consistency import LastWrites
from confab_gateway.errors import error_middleware
from confab_gateway.settings import GatewaySettings
from confab_infra.backends import free_port
from tests.browser.conftest import npm_package

REPO = Path(__file__).resolve().parents[2]
WIDGET = REPO / "services/gateway/confab_gateway/static/widget"
V1 = WIDGET / "v1"
LOADER = "confab-widget.js"


@pytest.fixture
async def gateway() -> AsyncIterator[TestClient]:
    app = web.Application(middlewares=[pages.cors_middleware, error_middleware])
    app["auth"] = None
    app["last_writes"] = LastWrites()
    # Never connected to: any free port (never one a `make run` may be serving on).
    fanout = f"ws://127.0.0.1:{free_port()}"
    settings = GatewaySettings(fanout_ws_url=fanout, s3_endpoint="http://s3.test")
    pages.install(app, settings, None)  # type: ignore[arg-type]
    client = TestClient(TestServer(app), auto_decompress=False)
    await client.start_server()
    yield client
    await client.close()


async def test_files_are_compressed_with_brotli_or_gzip(gateway: TestClient) -> None:
    source = (V1 / "widget.js").read_bytes()
    br = await gateway.get("/widget/v1/widget.js", headers={"Accept-Encoding": "gzip, br"})
    assert br.headers["Content-Encoding"] == "br"
    assert br.headers["Vary"] == "Accept-Encoding"
    assert len(await br.read()) < len(source) / 3
    gz = await gateway.get("/widget/v1/widget.js", headers={"Accept-Encoding": "gzip"})
    assert gz.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await gz.read()) == source
    plain = await gateway.get("/widget/v1/widget.js", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert await plain.read() == source
    assert plain.headers["Vary"] == "Accept-Encoding"
    refused = await gateway.get("/widget/v1/widget.js", headers={"Accept-Encoding": "br;q=0"})
    assert "Content-Encoding" not in refused.headers
    # One ETag per encoding; any of them revalidates (the content is the same).
    tags = {br.headers["ETag"], gz.headers["ETag"], plain.headers["ETag"]}
    assert len(tags) == 3
    again = await gateway.get(
        "/widget/v1/widget.js",
        headers={"Accept-Encoding": "gzip, br", "If-None-Match": gz.headers["ETag"]},
    )
    assert again.status == 304
    assert again.headers["ETag"] == br.headers["ETag"]


async def test_the_loader_names_a_build_cached_for_a_year(gateway: TestClient) -> None:
    loader = await gateway.get("/widget/v1/confab-widget.js", headers={"Accept-Encoding": "br"})
    assert loader.headers["Cache-Control"] == "public, max-age=300, must-revalidate"
    body = (await loader.read()).decode()
    build = re.search(r"var build = '([0-9a-f]{16})';", body)
    assert build, "the gateway did not write its build into the loader"
    versioned = await gateway.get(
        f"/widget/v1/{build[1]}/widget.js", headers={"Accept-Encoding": "br"}
    )
    assert versioned.status == 200
    assert versioned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert versioned.headers["Access-Control-Allow-Origin"] == "*"
    for name in ("i18n.js", "locales/ar.json", "vendor/linkify-it-6.1.0.mjs", "widget.css"):
        found = await gateway.get(f"/widget/v1/{build[1]}/{name}")
        assert found.status == 200, name
    assert (await gateway.get("/widget/v1/0123456789abcdef/widget.js")).status == 404
    unversioned = await gateway.get("/widget/v1/widget.js")
    assert unversioned.headers["Cache-Control"] == "public, max-age=300, must-revalidate"
    module = await gateway.get(f"/widget/v1/{build[1]}/vendor/uc.micro-3.0.0.mjs")
    assert module.headers["Content-Type"].startswith("text/javascript")


def test_no_brotli_copy_is_stale() -> None:
    """Run `node services/gateway/confab_gateway/static/widget/compress.mjs` after a change."""
    manifest = json.loads((WIDGET / "brotli/manifest.json").read_text())
    wanted = {
        p.relative_to(V1).as_posix()
        for p in V1.rglob("*")
        if p.suffix in (".js", ".mjs", ".css", ".json", ".txt", ".ts") and p.name != LOADER
    }
    assert set(manifest) == wanted
    for name, digest in manifest.items():
        assert hashlib.sha256((V1 / name).read_bytes()).hexdigest() == digest, name


def test_brotli_copies_decompress_to_their_sources() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (it decodes brotli here)")
    script = (
        "const z=require('zlib'),fs=require('fs');"
        "for(const [br,src] of JSON.parse(process.argv[1]))"
        "if(!z.brotliDecompressSync(fs.readFileSync(br)).equals(fs.readFileSync(src)))"
        "{console.log(src);process.exitCode=1}"
    )
    manifest = json.loads((WIDGET / "brotli/manifest.json").read_text())
    pairs = [[str(WIDGET / "brotli" / f"{n}.br"), str(V1 / n)] for n in manifest]
    run = subprocess.run([node, "-e", script, json.dumps(pairs)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


def test_the_vendored_linkify_it_is_the_npm_release() -> None:
    """Byte for byte, but for the import of uc.micro, which names the file beside it."""
    npm = npm_package("linkify-it") / "build/index.mjs"
    ours = (V1 / "vendor/linkify-it-6.1.0.mjs").read_text()
    theirs = npm.read_text()
    assert ours == theirs.replace('from "uc.micro";', 'from "./uc.micro-3.0.0.mjs";', 1)
    micro = npm_package("uc.micro") / "build/index.mjs"
    assert (V1 / "vendor/uc.micro-3.0.0.mjs").read_bytes() == micro.read_bytes()


def test_every_text_the_widget_shows_is_in_the_catalogue() -> None:
    english = json.loads((V1 / "locales/en.json").read_text())
    used: set[str] = set()
    for path in V1.glob("*.js"):
        code = path.read_text()
        used.update(re.findall(r"\bt\('([a-zA-Z]+\.[a-zA-Z.]+)'", code))
        used.update(re.findall(r"'((?:emoji|report|notSaved|upload)\.[a-zA-Z]+)'", code))
    missing = sorted(k for k in used - set(english) if not k.endswith(".js"))
    assert not missing, missing


def test_the_readme_documents_embedding() -> None:
    readme = (REPO / "README.md").read_text()
    loader = (V1 / "confab-widget.js").read_text()
    options = set(re.findall(r"\bdata\.([a-zA-Z]+)", loader))
    for option in options:
        attribute = "data-" + re.sub(r"[A-Z]", lambda m: "-" + m[0].lower(), option)
        assert attribute in readme, attribute
    for needed in (
        "POST /api/v1/conversations",
        "refreshSession",
        "setSession",
        "script-src",
        "style-src",
        "connect-src",
        "img-src",
        "client.js",
        "client.d.ts",
        "Content-Security-Policy",
        "docs/screenshots/widget-rtl-phone.png",
        "docs/screenshots/before/",
    ):
        assert needed in readme, needed
