"""Web push subscription from the widget and the dashboard, in Debian's Chromium.

Headless Chromium reaches no real push service, so each page gets one stand-in, and only
one: ``PushManager.prototype.subscribe`` returns a subscription whose endpoint and keys
are a browser of the local push service of ``tests.pushservices`` (it checks the VAPID
JWT and decrypts ``aes128gcm`` as a browser would), and ``Notification.requestPermission``
answers what the test says (granted or denied). Everything else is real: the widget's
settings panel and the dashboard's menu, the service worker registration (the tenant's
one-line worker importing the gateway's ``push-worker.js``; the dashboard's at
``/dashboard/push-worker.js``), the subscription posted to the gateway, the notifier
deciding to notify the offline user, and the encrypted push it sends.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from nats.js.errors import NoKeysError
from playwright.async_api import expect

from confab import bus
from tests.browser.conftest import HOST_PAGE, Shop
from tests.browser.test_widget import LIVE
from tests.pushservices import WebPushService
from tests.staff import Team, make_owner
from tests.waiting import until

WORKER = "/confab-push-worker.js"
GATEWAY_WORKER = (
    Path(__file__).resolve().parents[2]
    / "services/gateway/confab_gateway/static/widget/v1/push-worker.js"
)

# The one stand-in: subscribe gives the local push service's browser; the permission is
# what window.__push.permission says; window.__push records the calls.
STAND_IN = """
(() => {
  const subscription = %s;
  const state = (window.__push = { permission: 'granted', calls: [], unsubscribed: 0, fail: null });
  Notification.requestPermission = async () => state.permission;
  PushManager.prototype.subscribe = async function (options) {
    const key = btoa(String.fromCharCode(...new Uint8Array(options.applicationServerKey)));
    state.calls.push({
      userVisibleOnly: options.userVisibleOnly,
      key: key.replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, ''),
    });
    if (state.fail) throw new DOMException('Registration failed - push service error', state.fail);
    return {
      endpoint: subscription.endpoint,
      options: { applicationServerKey: options.applicationServerKey, userVisibleOnly: true },
      toJSON: () => subscription,
      unsubscribe: async () => { state.unsubscribed += 1; return true; },
    };
  };
})();
"""


# In the service worker: a push event with this payload, then what it showed. Events
# made by a script are not trusted, so their waitUntil throws; the handler has done its
# work by then (the promise it passes is made first).
SHOW = """(async (payload) => {
  // Pushed again every half second until shown, for up to 15 s: a permission granted a
  // moment ago may not have reached the worker yet, and then showNotification refuses.
  for (let i = 0; i < 300; i++) {
    if (i %% 10 === 0) {
      try {
        self.dispatchEvent(new PushEvent('push', { data: JSON.stringify(payload) }));
      } catch (error) {}
    }
    const [n] = await self.registration.getNotifications();
    if (n) {
      return { title: n.title, body: n.body, tag: n.tag, conversation_id: n.data.conversation_id };
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return null;
})(%s)"""
CLICK = """(async () => {
  const [notification] = await self.registration.getNotifications();
  try {
    self.dispatchEvent(new NotificationEvent('notificationclick', { notification }));
  } catch (error) {}
})()"""


@pytest.fixture(scope="session")
async def host_site(stack: Any) -> AsyncIterator[str]:
    """The tenant's site (as in conftest) plus its one-line service worker, which pulls in
    the gateway's: a browser registers a worker only from the page's own origin."""

    async def page(request: web.Request) -> web.Response:
        q = request.query
        data = json.loads(q.get("data", "{}"))
        attributes = " ".join(f'data-{k}="{html.escape(v)}"' for k, v in data.items())
        attributes += " async"
        body = HOST_PAGE.format(api=html.escape(q["api"]), attributes=attributes, mount="")
        return web.Response(text=body, content_type="text/html")

    async def worker(_request: web.Request) -> web.Response:
        line = f"importScripts({json.dumps(stack.gateway + '/widget/v1/push-worker.js')});\n"
        return web.Response(text=line, content_type="text/javascript")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get(WORKER, worker)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def push_service() -> AsyncIterator[WebPushService]:
    service = await WebPushService().start()
    yield service
    await service.close()


def stand_in(subscription: dict[str, Any]) -> Callable[[Any], Any]:
    async def before(page: Any) -> None:
        await page.add_init_script(STAND_IN % json.dumps(subscription))

    return before


async def settings(shop: Shop, person: Any, browser: Any, locale: str) -> tuple[Any, Any, Any]:
    """The person's widget on the tenant's site (with its worker and the stand-in), its
    notification settings open: the page, the push button and its status line."""
    page = await shop.widget(
        person,
        open_=True,
        label=f"push {locale}",
        locale=locale,
        attributes={"push-worker": WORKER},
        before=stand_in(browser.subscription()),
    )
    await page.get_by_test_id("open-settings").click()
    return page, page.get_by_test_id("push-toggle"), page.get_by_test_id("push-status")


async def offline(shop: Shop, user_id: str) -> None:
    """Wait until no fanout node says a socket of the user is on a conversation."""
    nc = await bus.connect(shop.stack.info["nats_url"], "test-push-presence")
    kv = await nc.jetstream().key_value("presence")
    mark = "." + base64.urlsafe_b64encode(user_id.encode()).rstrip(b"=").decode() + "."

    async def gone() -> bool:
        try:
            keys = await kv.keys()
        except NoKeysError:
            return True
        return not any(k.startswith("w.") and mark in k for k in keys)

    await until(gone, "the user's sockets gone from presence")
    await nc.close()


async def away(
    shop: Shop, user_id: str, sender: Any, cid: str, text: str, service: WebPushService
) -> list[tuple[str, dict[str, Any], str]]:
    """Once the user's sockets are gone, ``sender`` writes to them: the pushes received."""
    await offline(shop, user_id)
    status, sent = await sender.api.post(
        f"/api/widget/conversations/{cid}/messages", {"content": text}
    )
    assert status == 201, sent
    return list(await until(lambda: service.received, "the web push"))


async def test_the_widget_subscribes_this_browser_and_the_offline_user_gets_the_push(
    shop: Shop, push_service: WebPushService
) -> None:
    status, body = await shop.tenant.patch("/api/v1/notification-settings", {"delay_seconds": 1})
    assert status == 200, body
    ann, bob = await shop.person("Ann"), await shop.person("Bob")
    cid = await shop.conversation(ann, bob, title="Jacket")
    name, browser = push_service.browser()
    status, config = await ann.api.get("/api/widget/push")
    assert status == 200, config
    page, toggle, note = await settings(shop, ann, browser, "en-US")
    await expect(toggle).to_have_text("Notify me in this browser", timeout=LIVE)
    await expect(toggle).to_be_enabled()

    async def subscriptions() -> list[dict[str, Any]]:
        status, listed = await ann.api.get("/api/widget/push/subscriptions")
        assert status == 200, listed
        return list(listed["data"])

    # On: permission asked on the click, the tenant's worker registered (it pulls in the
    # gateway's), subscribed with the deployment's VAPID key, the subscription saved.
    await toggle.click()
    await expect(note).to_have_text(
        "This browser will show a notification when you have unread messages."
    )
    await expect(toggle).to_have_text("Stop notifying this browser")
    calls = await page.evaluate("window.__push.calls")
    assert calls == [{"userVisibleOnly": True, "key": config["vapid_public_key"]}]
    registered = await page.evaluate(
        "navigator.serviceWorker.getRegistration('/')"
        ".then(r => r && r.active && r.active.scriptURL)"
    )
    assert registered == shop.host + WORKER
    [saved] = await subscriptions()
    assert saved["kind"] == "webpush"

    # Off: the browser unsubscribed and the server's copy deleted; then on again.
    await toggle.click()
    await expect(note).to_have_text("This browser will not show notifications any more.")
    assert await page.evaluate("window.__push.unsubscribed") == 1
    assert await subscriptions() == []
    await toggle.click()
    await expect(toggle).to_have_text("Stop notifying this browser")
    assert [s["id"] for s in await subscriptions()] == [saved["id"]]

    # The worker itself: a push (dispatched in the worker: no push service reaches this
    # browser) shows the notification; a click on it opens the conversation in the widget.
    await page.context.grant_permissions(["notifications"], origin=shop.host)
    [worker] = [w for w in page.context.service_workers if w.url == shop.host + WORKER]
    shown = await worker.evaluate(
        SHOW % json.dumps({"title": "T", "body": "B", "conversation_id": cid})
    )
    assert shown == {"title": "T", "body": "B", "tag": f"confab-{cid}", "conversation_id": cid}
    await worker.evaluate(CLICK)
    await expect(page.locator("#cw-title")).to_have_text("Jacket", timeout=LIVE)
    await expect(page.get_by_role("textbox", name="Message")).to_be_visible()

    # Ann goes away; Bob writes; her browser's push service gets the encrypted push.
    await page.close()
    [(got, payload, k)] = await away(shop, ann.id, bob, cid, "Still in stock?", push_service)
    assert push_service.refused == []
    assert got == name and k == config["vapid_public_key"]
    assert payload["title"] == "New message in Jacket"
    assert payload["body"] == "Bob: Still in stock?"
    assert payload["conversation_id"] == cid and payload["count"] == "1"


async def test_refusals_are_said_plainly_and_nothing_is_saved(
    shop: Shop, push_service: WebPushService
) -> None:
    ann = await shop.person("Ann")
    _, browser = push_service.browser()
    page, toggle, note = await settings(shop, ann, browser, "de-DE")
    await expect(toggle).to_have_text("In diesem Browser benachrichtigen", timeout=LIVE)

    # The user says no: no subscription is even asked for.
    await page.evaluate("window.__push.permission = 'denied'")
    await toggle.click()
    await expect(note).to_contain_text("Benachrichtigungen sind für diese Website blockiert.")
    assert await page.evaluate("window.__push.calls") == []

    # The browser's push service says no.
    await page.evaluate("window.__push.permission = 'granted'; window.__push.fail = 'AbortError'")
    await toggle.click()
    await expect(note).to_contain_text("konnte Benachrichtigungen nicht ein- oder ausschalten")
    await expect(toggle).to_have_text("In diesem Browser benachrichtigen")
    status, listed = await ann.api.get("/api/widget/push/subscriptions")
    assert status == 200 and listed["data"] == [], listed

    # Where it cannot work there is no offer: no PushManager, or a tenant's page without
    # a worker of its own (the gateway's cannot be registered from another origin).
    for attributes, script in (({"push-worker": WORKER}, "delete window.PushManager"), ({}, "")):

        async def before(page: Any, script: str = script) -> None:
            if script:
                await page.add_init_script(script)

        other = await shop.widget(ann, open_=True, attributes=attributes, before=before)
        await other.get_by_test_id("open-settings").click()
        await expect(other.get_by_test_id("settings-save")).to_be_enabled(timeout=LIVE)
        await expect(other.get_by_test_id("push-toggle")).to_have_count(0)


async def test_the_worker_is_served_and_a_staff_member_subscribes_from_the_dashboard(
    shop: Shop, push_service: WebPushService, http: aiohttp.ClientSession
) -> None:
    gateway = shop.stack.gateway
    source = GATEWAY_WORKER.read_bytes()
    async with http.get(gateway + "/dashboard/push-worker.js") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert response.headers["Service-Worker-Allowed"] == "/dashboard/"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert await response.read() == source
    async with http.get(gateway + "/widget/v1/push-worker.js") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert response.headers["Access-Control-Allow-Origin"] == "*"  # importScripts
        assert await response.read() == source

    # The staff routes: not without the dashboard's cookie, not with a widget token.
    alice = await shop.person("Alice")
    for headers in ({}, {"Authorization": f"Bearer {alice.token}"}):
        async with http.get(gateway + "/dashboard/api/push/subscriptions", headers=headers) as r:
            assert r.status == 401, await r.text()

    status, body = await shop.tenant.patch("/api/v1/notification-settings", {"delay_seconds": 1})
    assert status == 200, body
    status, widget_me = await alice.api.get("/api/widget/me")
    assert status == 200, widget_me
    team = Team(shop.stack, {"id": widget_me["workspace_id"]}, shop.tenant)
    email = "owner.push@example.com"
    await make_owner(shop.stack, team.workspace["id"], email)
    status, body, owner = await team.sign_in(email)
    assert status == 200, body
    status, forged = await owner.api.post(
        "/dashboard/api/push/subscriptions", {"endpoint": "https://push.example/x", "keys": {}}
    )
    assert status == 403, forged  # no CSRF token
    await team.close()

    name, browser = push_service.browser()
    context = await shop.browser.new_context()
    shop.contexts.append(context)
    await context.add_init_script(STAND_IN % json.dumps(browser.subscription()))
    page = await context.new_page()
    shop.watch(page, "dashboard")
    await page.goto(f"{gateway}/dashboard/#workspace={team.workspace['id']}")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("correct horse battery staple")
    await page.get_by_label("Password").press("Enter")
    toggle, note = page.get_by_test_id("push-toggle"), page.get_by_test_id("push-status")
    await expect(toggle).to_have_text("Notify me in this browser", timeout=LIVE)
    await page.evaluate("window.__push.permission = 'denied'")
    await toggle.click()
    await expect(note).to_contain_text("Notifications are blocked for this site.")
    await page.evaluate("window.__push.permission = 'granted'")
    await toggle.click()
    await expect(toggle).to_have_text("Stop notifying this browser")
    await expect(note).to_have_text("")
    await expect(page.locator("#announcer")).to_have_text(
        "This browser will show a notification for unread messages."
    )
    scope = await page.evaluate(
        "navigator.serviceWorker.getRegistration('/dashboard/').then(r => r && r.scope)"
    )
    assert scope == gateway + "/dashboard/"
    listed = await page.evaluate("fetch('/dashboard/api/push/subscriptions').then(r => r.json())")
    assert [s["kind"] for s in listed["data"]] == ["webpush"]

    # The staff member (a user) is in a conversation, away; Alice writes: pushed.
    status, conv = await shop.tenant.post(
        "/api/v1/conversations",
        {"participant_ids": [owner.user_id, alice.id], "type": "group", "title": "Returns"},
    )
    assert status in (200, 201), conv
    await page.close()
    [(got, payload, _)] = await away(shop, owner.user_id, alice, conv["id"], "Where?", push_service)
    assert got == name and push_service.refused == []
    assert payload["title"] == "New message in Returns"
    assert payload["conversation_id"] == conv["id"]
