"""The widget's notification settings panel (notifications.js) in a real browser: it
shows the user's preferences, saves what the user changes, speaks the page's language,
and passes axe. And presence as the notifier reads it: while the widget's socket is on a
conversation, the fanout node says so in the presence bucket (``w.`` keys); when the page
goes, so does the key."""

from __future__ import annotations

import base64

from nats.js.errors import NoKeysError
from playwright.async_api import expect

from confab import bus
from tests.browser.conftest import Shop, axe_violations
from tests.browser.test_widget import live
from tests.waiting import until


async def test_the_user_sets_their_notification_preferences_in_the_widget(
    shop: Shop, axe_source: str
) -> None:
    ann, bob = await shop.person("Ann"), await shop.person("Bob")
    cid = await shop.conversation(ann, bob)
    nc = await bus.connect(shop.stack.info["nats_url"], "test-presence")
    kv = await nc.jetstream().key_value("presence")
    watching = f".{enc('private-conversation.' + cid)}.{enc(bob.id)}."

    async def watched() -> bool:
        try:
            keys = await kv.keys()
        except NoKeysError:
            return False
        return any(k.startswith("w.") and watching in k for k in keys)

    page = await shop.widget(bob, label="settings", locale="de-DE", open_=True)
    await live(page)
    await until(watched, "the fanout's watcher key")
    await page.get_by_test_id("open-settings").click()
    form = page.get_by_test_id("notification-settings")
    await expect(form).to_be_visible()
    await expect(page.locator("#cw-title")).to_have_text("Benachrichtigungen")
    save = page.get_by_test_id("settings-save")
    await expect(save).to_be_enabled()  # the preferences are loaded
    await expect(page.get_by_test_id("settings-email")).to_be_checked()
    violations = await axe_violations(page, axe_source)
    assert not violations, "\n".join(violations)

    await page.get_by_test_id("settings-level").select_option("mentions")
    await page.get_by_test_id("settings-email").uncheck()
    await page.get_by_test_id("settings-quiet").check()
    await save.click()
    await expect(page.get_by_test_id("settings-status")).to_have_text("Gespeichert.")
    status, prefs = await bob.api.get("/api/widget/notification-preferences")
    assert status == 200, prefs
    assert prefs["level"] == "mentions" and prefs["email"] is False and prefs["push"] is True
    assert prefs["quiet_hours"] == {"start": "22:00", "end": "07:00"}

    await page.get_by_test_id("back").click()
    await expect(page.get_by_test_id("conversation")).to_be_visible()
    await page.close()

    async def gone() -> bool:
        return not await watched()

    await until(gone, "the watcher key removed with the socket")
    await nc.close()


def enc(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
