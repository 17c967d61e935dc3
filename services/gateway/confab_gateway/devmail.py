"""``/dev/mail``: the mails ``confab up``'s local catcher kept, for a developer to read.

Only when the gateway is given the catcher's folder (``CONFAB_GATEWAY_DEV_MAIL_DIR``,
which ``confab up`` sets when it runs the catcher); a deployment has no such page. The
list shows the newest 200 mails (time, recipient, subject); ``/dev/mail/<file>`` shows
one: its headers and plain-text part as text, ``?part=html`` its HTML part (served with a
sandboxing Content-Security-Policy: no scripts, no requests), ``?raw=1`` the ``.eml``.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import html
import re
from email.message import EmailMessage
from pathlib import Path

from aiohttp import web

_NAME = re.compile(r"^[0-9T]+-[0-9]+\.eml$")
_SANDBOX = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _read(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _index(folder: Path) -> str:
    files = sorted(folder.glob("*.eml"), reverse=True)[:200] if folder.is_dir() else []
    rows = []
    for path in files:
        m = _read(path)
        rows.append(
            f'<tr><td><a href="/dev/mail/{path.name}">{html.escape(path.stem)}</a></td>'
            f"<td>{html.escape(str(m['To'] or ''))}</td>"
            f"<td>{html.escape(str(m['Subject'] or ''))}</td></tr>"
        )
    return (
        "<!doctype html><meta charset='utf-8'><title>Caught mail</title>"
        f"<h1>Caught mail ({len(files)})</h1><p>Kept in {html.escape(str(folder))}; "
        "nothing here was sent.</p><table>" + "".join(rows) + "</table>"
    )


def _one(folder: Path, name: str, raw: bool, part: str) -> web.Response:
    path = folder / name
    if not _NAME.match(name) or not path.is_file():
        raise web.HTTPNotFound()
    if raw:
        return web.Response(body=path.read_bytes(), content_type="message/rfc822")
    m = _read(path)
    if part == "html":
        found = m.get_body(("html",))
        return web.Response(
            text=found.get_content() if found is not None else "",
            content_type="text/html",
            headers={"Content-Security-Policy": _SANDBOX},
        )
    plain = m.get_body(("plain",))
    head = "".join(f"{k}: {v}\n" for k, v in m.items())
    content = plain.get_content() if plain is not None else ""
    return web.Response(text=f"{head}\n{content}", content_type="text/plain")


def routes(folder: Path) -> list[web.RouteDef]:
    async def index(_request: web.Request) -> web.Response:
        text = await asyncio.to_thread(_index, folder)
        return web.Response(text=text, content_type="text/html")

    async def one(request: web.Request) -> web.Response:
        return await asyncio.to_thread(
            _one,
            folder,
            request.match_info["name"],
            bool(request.query.get("raw")),
            request.query.get("part", ""),
        )

    return [web.get("/dev/mail", index), web.get("/dev/mail/{name}", one)]
