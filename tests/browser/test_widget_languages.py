"""Languages: the widget speaks the visitor's language (data-locale, else the browser's),
formats with Intl, lays out right to left for Arabic, and the tenant can reword any text.
Also the headless client, used on its own as a custom interface would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from tests.browser.conftest import PHONE, Shop, screenshot_path
from tests.browser.test_widget import LIVE, eventually, live, message
from tests.browser.test_widget_fixes import people, post, unread

LOCALES = (
    Path(__file__).resolve().parents[2] / "services/gateway/confab_gateway/static/widget/v1/locales"
)


async def test_every_catalogue_has_every_text_in_every_plural_form(shop: Shop) -> None:
    english = json.loads((LOCALES / "en.json").read_text())
    page = await shop.page("about:blank", label="catalogues")
    for path in sorted(LOCALES.glob("*.json")):
        catalogue = json.loads(path.read_text())
        assert set(catalogue) == set(english), path.name
        # The forms counts up to a thousand take (a form only millions take falls back
        # to "other", as CLDR's own fallback does).
        forms = set(
            await page.evaluate(
                """code => { const rules = new Intl.PluralRules(code);
                  return [...new Set([...Array(1001).keys()].map(n => rules.select(n)))]; }""",
                path.stem,
            )
        )
        for key, text in catalogue.items():
            if isinstance(english[key], dict):
                assert isinstance(text, dict) and forms <= set(text), (path.name, key, forms)


async def test_spanish_by_data_locale_with_the_tenants_own_words(shop: Shop) -> None:
    ann, bob = await people(shop, "Ana", "Bruno")
    cid = await shop.conversation(ann, bob)
    await post(ann, cid, "Hola, ¿en qué podemos ayudarte?")
    strings = {"list.title": "Ayuda", "es": {"composer.placeholder": "Escribe tu pregunta…"}}
    b = await shop.widget(
        bob,
        attributes={"locale": "es", "strings": json.dumps(strings)},
        label="es",
    )
    await live(b)
    await b.get_by_role("button", name="Chat").click()
    await expect(b.get_by_role("heading", level=2)).to_have_text("Ayuda")  # the tenant's
    await b.get_by_test_id("conversation").click()
    await expect(message(b, "Hola")).to_be_visible(timeout=LIVE)
    await expect(b.get_by_test_id("composer")).to_have_attribute(
        "placeholder", "Escribe tu pregunta…"
    )
    await expect(b.get_by_role("button", name="Adjuntar un archivo")).to_be_visible()
    await expect(b.locator(".cw-day")).to_have_text("Hoy")  # Intl.RelativeTimeFormat
    await expect(b.locator(".cw").first).to_have_attribute("lang", "es")


async def test_german_from_the_browser(shop: Shop) -> None:
    (carol,) = await people(shop, "Carola")
    b = await shop.widget(carol, locale="de-DE", open_=True, label="de")
    await expect(b.get_by_role("heading", level=2)).to_have_text("Unterhaltungen", timeout=LIVE)
    await expect(b.get_by_test_id("no-conversations")).to_contain_text("Noch keine Unterhaltungen")
    await expect(b.get_by_role("button", name="Chat schließen")).to_be_visible()


async def test_arabic_is_laid_out_right_to_left(shop: Shop) -> None:
    ann, bob = await people(shop, "سارة", "عمر")
    cid = await shop.conversation(ann, bob)
    for text in ("مرحبًا! كيف يمكنني مساعدتك؟", "لدينا السترة باللون الأزرق."):
        await post(ann, cid, text)
    await post(bob, cid, "هل تتوفر بمقاس متوسط؟")
    await post(ann, cid, "نعم، ويمكنك رؤية دليل المقاسات هنا: https://example.com/sizes")
    b = await shop.widget(bob, attributes={"locale": "ar"}, viewport=PHONE, label="ar")
    await live(b)
    launcher = b.get_by_test_id("launcher")
    box = await launcher.bounding_box()
    assert box is not None and box["x"] < PHONE["width"] / 2  # the corner on the left
    three = await b.evaluate("new Intl.NumberFormat('ar').format(3)")
    await expect(launcher.get_by_test_id("unread")).to_have_text(three)
    # Arabic's "few" form (3 to 10), from Intl.PluralRules.
    await expect(launcher).to_have_attribute("aria-label", f"الدردشة، {three} رسائل غير مقروءة")
    await launcher.click()
    await b.get_by_test_id("conversation").click()
    await expect(message(b, "دليل المقاسات")).to_be_visible(timeout=LIVE)
    root = b.locator(".cw").first
    await expect(root).to_have_attribute("dir", "rtl")
    theirs = await message(b, "مرحبًا").locator(".cw-bubble").bounding_box()
    mine = await message(b, "هل تتوفر").locator(".cw-bubble").bounding_box()
    assert theirs and mine and mine["x"] < theirs["x"]  # mirrored: yours on the left
    await b.get_by_test_id("composer").fill("شكرًا جزيلًا!")
    await b.screenshot(path=screenshot_path("widget-rtl-phone.png"))


async def test_the_headless_client_on_its_own(shop: Shop) -> None:
    """client.js imported by a page of its own: the list, a thread, sending with a local
    copy, live messages, typing, read marks and presence, as events."""
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    await post(ann, cid, "Hello from the shop")
    gateway = shop.stack.gateway
    script = f"""
      window.seen = [];
      import('{gateway}/widget/v1/client.js').then(async ({{ createClient }}) => {{
        const client = createClient({{ sessionToken: '{bob.token}', apiUrl: '{gateway}' }});
        window.client = client;
        for (const type of ['connection', 'conversations', 'message', 'typing', 'read',
                            'presence']) {{
          client.on(type, (detail) => window.seen.push({{ type, detail: JSON.parse(
            JSON.stringify(detail, (k, v) => (k === 'error' ? String(v) : v))) }}));
        }}
        await client.start();
        await client.open('{cid}');
        client.watchPresence('{cid}');
        window.ready = true;
      }});
    """
    page = await shop.widget(None, mount=script, label="headless")
    await eventually(lambda: page.evaluate("window.ready === true"), timeout=LIVE / 1000)

    async def seen(check: str) -> bool:
        return bool(await page.evaluate(f"window.seen.some(e => {check})"))

    await eventually(lambda: seen("e.type === 'connection' && e.detail.state === 'live'"))
    listed = await page.evaluate("client.conversations.map(c => [c.id, c.unread_count])")
    assert listed == [[cid, 1]]
    texts = await page.evaluate(f"client.messages('{cid}').map(m => m.content)")
    assert texts == ["Hello from the shop"]

    local = await page.evaluate(f"client.send('{cid}', {{ content: 'Sent headless' }}).id")
    assert local.startswith("local:")
    await eventually(lambda: seen(f"e.type === 'message' && e.detail.replaces === '{local}'"))
    stored = await page.evaluate(f"client.messages('{cid}').map(m => [m.content, !!m.local])")
    assert stored == [["Hello from the shop", False], ["Sent headless", False]]

    await ann.api.post(f"/api/widget/conversations/{cid}/typing", {"is_typing": True})
    await eventually(lambda: seen("e.type === 'typing' && e.detail.users.length === 1"))
    await post(ann, cid, "A live one")
    live_one = "e.type === 'message' && e.detail.message.content === 'A live one'"
    await eventually(lambda: seen(live_one))
    seq = await page.evaluate(f"client.messages('{cid}').at(-1).seq")
    await page.evaluate(f"client.markRead('{cid}', {seq})")

    async def read() -> bool:
        return await unread(bob, cid) == 0

    await eventually(read)
    await eventually(lambda: seen("e.type === 'presence' && e.detail.members.length >= 1"))
    members: Any = await page.evaluate(f"client.members('{cid}').map(m => m.id)")
    assert bob.id in members
