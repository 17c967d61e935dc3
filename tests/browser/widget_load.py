"""How heavy and how quick a cold widget load is on a slow connection (a measurement for
the README, not a test: speed goals are not assertions).

    .venv/bin/python -m tests.browser.widget_load [--runs 3]

Starts a platform of its own (as the tests do), makes a visitor with three conversations,
and loads a tenant's page that embeds the widget with one script tag in a fresh browser
context (empty cache) throttled to 1.6 Mbps down, 750 kbps up, 150 ms round trip (the
"slow 4G" of Lighthouse; Chromium's network emulation). It prints, as JSON, the bytes on
the wire (compressed, as Chromium received them) of the widget's files and of everything
the widget fetched, and the time from navigation to interactive: the launcher shown and
pressing it shows the conversation list, and to live (the socket connected).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

from confab_infra.testing import fresh_database, open_backends
from tests.browser.conftest import CHROMIUM_ARGS, chromium_path, serve_host_site
from tests.client import Api, new_workspace
from tests.stack import backend_flags, running_stack

DOWN = 1_600_000 / 8  # bytes per second
UP = 750_000 / 8
RTT_MS = 150


async def visitor(gateway: str, admin_token: str) -> str:
    async with aiohttp.ClientSession() as http:
        admin = Api(http, gateway, {"Authorization": f"Bearer {admin_token}"})
        workspace = await new_workspace(admin, "Load test shop")
        tenant = admin.as_(**{"X-API-Key": workspace["api_key"]})
        ids = []
        for name in ("Visitor", "Agent"):
            status, user = await tenant.post("/api/v1/users", {"external_id": name, "name": name})
            assert status in (200, 201), user
            ids.append(user["id"])
        for n in range(3):
            status, conv = await tenant.post(
                "/api/v1/conversations",
                {"participant_ids": ids, "type": "group", "title": f"Order {n + 1}"},
            )
            assert status in (200, 201), conv
            agent = await tenant.post("/api/v1/sessions", {"user_id": ids[1]})
            speak = tenant.as_(Authorization=f"Bearer {agent[1]['token']}")
            await speak.post(
                f"/api/widget/conversations/{conv['id']}/messages",
                {"content": f"Your order {n + 1} has shipped."},
            )
        status, session = await tenant.post("/api/v1/sessions", {"user_id": ids[0]})
        assert status == 201, session
        return str(session["token"])


async def measure(browser: Any, url: str, gateway: str) -> dict[str, Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": RTT_MS, "downloadThroughput": DOWN, "uploadThroughput": UP},
    )
    urls: dict[str, str] = {}
    encodings: dict[str, str] = {}
    sizes: dict[str, int] = {}
    cdp.on(
        "Network.requestWillBeSent", lambda e: urls.__setitem__(e["requestId"], e["request"]["url"])
    )
    cdp.on(
        "Network.responseReceived",
        lambda e: encodings.__setitem__(
            e["requestId"],
            {k.lower(): v for k, v in e["response"]["headers"].items()}.get("content-encoding", ""),
        ),
    )
    cdp.on(
        "Network.loadingFinished",
        lambda e: sizes.__setitem__(e["requestId"], int(e["encodedDataLength"])),
    )
    started = time.monotonic()
    await page.goto(url, wait_until="commit")
    # Interactive: the launcher is shown, and pressing it shows the conversations.
    await page.wait_for_function(
        """() => { const host = document.querySelector('.confab-widget');
          const root = host && host.shadowRoot;
          const cw = root && root.querySelector('.cw');
          return Boolean(cw && !cw.hidden && root.querySelector('[data-testid=launcher]')); }""",
        timeout=120_000,
    )
    shown = await page.evaluate("performance.now()")
    await page.evaluate(
        """document.querySelector('.confab-widget').shadowRoot
             .querySelector('[data-testid=launcher]').click()"""
    )
    await page.wait_for_function(
        """() => document.querySelector('.confab-widget').shadowRoot
             .querySelector('.cw-conversation')""",
        timeout=120_000,
    )
    interactive = await page.evaluate("performance.now()")
    await page.wait_for_function(
        """() => document.querySelector('.confab-widget').shadowRoot
             .querySelector('[data-testid=connection]').dataset.state === 'live'""",
        timeout=120_000,
    )
    live_at = await page.evaluate("performance.now()")
    wall = time.monotonic() - started
    widget_files = {
        rid: n
        for rid, n in sizes.items()
        if urlsplit(urls.get(rid, "")).path.startswith("/widget/")
    }
    on_gateway = {rid: n for rid, n in sizes.items() if urls.get(rid, "").startswith(gateway)}
    await context.close()
    return {
        "widget_files": len(widget_files),
        "widget_bytes": sum(widget_files.values()),
        "gateway_bytes": sum(on_gateway.values()),
        "encodings": sorted({encodings.get(r, "") or "identity" for r in widget_files}),
        "launcher_ms": round(shown),
        "interactive_ms": round(interactive),
        "live_ms": round(live_at),
        "wall_s": round(wall, 2),
    }


async def main(runs: int) -> None:
    from playwright.async_api import async_playwright

    path = chromium_path()
    if path is None:
        sys.exit("no Chromium")
    with (
        open_backends() as backends,
        fresh_database(backends.database_url) as database,
        tempfile.TemporaryDirectory() as data,
        running_stack(Path(data), *backend_flags(backends, database)) as stack,
    ):
        token = await visitor(stack.gateway, stack.info["admin_token"])
        runner, host = await serve_host_site()
        data = json.dumps({"session-token": token})
        url = f"{host}/?{urlencode({'api': stack.gateway, 'data': data})}"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
            results = [await measure(browser, url, stack.gateway) for _ in range(runs)]
            await browser.close()
        await runner.cleanup()
    summary = {
        "profile": "1.6 Mbps down, 750 kbps up, 150 ms RTT, cold cache, 1280x800",
        "runs": results,
        "median_interactive_ms": statistics.median(r["interactive_ms"] for r in results),
        "median_live_ms": statistics.median(r["live_ms"] for r in results),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))
