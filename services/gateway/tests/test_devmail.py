"""``/dev/mail``: the mails confab up's catcher kept, listed and shown without letting a
mail's HTML run anything or a path leave the folder."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from confab_gateway import devmail


async def test_caught_mail_is_listed_and_shown_safely(tmp_path: Path) -> None:
    mail = EmailMessage()
    mail["Subject"] = "New message <script>"
    mail["To"] = "ann@example.test"
    mail.set_content("Hello Ann")
    mail.add_alternative("<p>Hello <b>Ann</b></p><script>alert(1)</script>", subtype="html")
    (tmp_path / "20261206T080000-00001.eml").write_bytes(bytes(mail))
    (tmp_path / "secret.txt").write_text("not a mail")
    app = web.Application()
    app.add_routes(devmail.routes(tmp_path))
    async with TestClient(TestServer(app)) as client:
        index = await client.get("/dev/mail")
        text = await index.text()
        assert index.status == 200 and "New message &lt;script&gt;" in text
        one = await client.get("/dev/mail/20261206T080000-00001.eml")
        assert one.status == 200 and "Hello Ann" in await one.text()
        assert one.content_type == "text/plain"
        html = await client.get("/dev/mail/20261206T080000-00001.eml?part=html")
        assert "sandbox" in html.headers["Content-Security-Policy"]
        assert "default-src 'none'" in html.headers["Content-Security-Policy"]
        raw = await client.get("/dev/mail/20261206T080000-00001.eml?raw=1")
        assert raw.content_type == "message/rfc822"
        for name in ("secret.txt", "..%2Fsecret.txt", "nope-1.eml"):
            assert (await client.get(f"/dev/mail/{name}")).status == 404
