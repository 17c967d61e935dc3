"""Email: the message (plain text and HTML alternatives, one-click unsubscribe) and the
SMTP client, and the signed unsubscribe tokens.

One-click unsubscribe is RFC 8058: ``List-Unsubscribe: <https://…/unsubscribe?token=…>``
and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; a mail client POSTs that body
to the address and the gateway turns it into the user's preference (email off). A GET
of the same address (link scanners fetch links) only shows a page with a button; it
changes nothing.

A token is ``<workspace>.<user>.<signature>``: HMAC-SHA256 over both ids with the
deployment's key (kept in the notifier's KV bucket, made once), base64url. It does not
expire: the link in an old mail keeps working, and it can do nothing but turn email off
for that one user. The key is made once per deployment (``keys``).

A permanent refusal (a 5xx answer to the recipient or the data) is ``Refused``; anything
else (a refused connection, a 4xx, a timeout) is ``Unreachable`` and is tried again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import ssl
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

import aiosmtplib
from nats.js.kv import KeyValue

from confab.ids import is_valid_id
from confab_notifier.keys import deployment_secret
from confab_notifier.settings import NotifierSettings
from confab_notifier.templates import Rendered

UNSUBSCRIBE_KEY = "unsubscribe-key"
ONE_CLICK = "List-Unsubscribe=One-Click"


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class Unreachable(Exception):
    pass


class Tokens:
    def __init__(self, key: bytes) -> None:
        self.key = key

    @classmethod
    async def open(cls, kv: KeyValue) -> Tokens:
        return cls(await deployment_secret(kv, UNSUBSCRIBE_KEY, secrets.token_bytes(32)))

    def _mac(self, workspace_id: str, user_id: str) -> str:
        mac = hmac.new(self.key, f"unsubscribe/{workspace_id}/{user_id}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    def make(self, workspace_id: str, user_id: str) -> str:
        return f"{workspace_id}.{user_id}.{self._mac(workspace_id, user_id)}"

    def check(self, token: str) -> tuple[str, str] | None:
        """(workspace, user) if the token is one this deployment made; None otherwise."""
        parts = token.split(".")
        if len(parts) != 3 or not all(is_valid_id(p) for p in parts[:2]):
            return None
        workspace_id, user_id, mac = parts
        if not hmac.compare_digest(mac.encode(), self._mac(workspace_id, user_id).encode()):
            return None
        return workspace_id, user_id


def address_hash(address: str) -> str:
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


def build(
    rendered: Rendered,
    *,
    sender_name: str,
    from_address: str,
    to_name: str,
    to_address: str,
    notification_id: str,
    unsubscribe_url: str,
    language: str,
) -> EmailMessage:
    """The mail with both parts; with ``unsubscribe_url`` ("" for a mail that is not a
    notification, such as an invitation) the one-click unsubscribe headers."""
    msg = EmailMessage()
    msg["Subject"] = rendered.subject
    msg["From"] = formataddr((sender_name, from_address))
    msg["To"] = formataddr((to_name, to_address))
    domain = from_address.rsplit("@", 1)[-1] or "confab.invalid"
    # The same notification always has the same Message-ID: a repeat is recognisable.
    msg["Message-ID"] = f"<{notification_id}@{domain}>" if notification_id else make_msgid()
    if unsubscribe_url:
        msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = ONE_CLICK
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    msg["Content-Language"] = language  # after the parts: setting content clears Content-*
    return msg


class Mailer:
    def __init__(self, settings: NotifierSettings) -> None:
        self.s = settings

    @property
    def enabled(self) -> bool:
        return bool(self.s.smtp_host)

    async def send(self, msg: EmailMessage, to_address: str) -> None:
        s = self.s
        try:
            _, _ = await aiosmtplib.send(
                msg,
                sender=s.smtp_from,
                recipients=[to_address],
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username or None,
                password=s.smtp_password or None,
                use_tls=s.smtp_security == "tls",
                start_tls=s.smtp_security == "starttls",
                tls_context=ssl.create_default_context() if s.smtp_security != "none" else None,
                timeout=s.smtp_timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0] if exc.recipients else None
            code = first.code if first is not None else 550
            reason = first.message if first is not None else str(exc)
            if 500 <= code < 600:
                raise Refused(code, reason) from None
            raise Unreachable(f"{code} {reason}") from None
        except aiosmtplib.SMTPDataError as exc:  # the message refused for this recipient
            if 500 <= exc.code < 600:
                raise Refused(exc.code, exc.message) from None
            raise Unreachable(f"{exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Our side or the server's (authentication, the sender refused, a dropped
            # connection): not the recipient's address; tried again.
            raise Unreachable(str(exc) or type(exc).__name__) from None
