"""A local SMTP server that keeps every mail instead of sending it (``aiosmtpd``).

``confab up`` starts one when no ``CONFAB_SMTP_HOST`` is given and points the notifier
at it, so a stack on one machine never sends mail to the internet: each message is
written to ``<data-dir>/mail/<time>-<n>.eml`` (open it with any mail program) and shown
by the gateway at ``/dev/mail``. Tests start one in their own process and read what
arrived (``messages``, ``wait_for``).

It runs in a thread of its own (aiosmtpd's ``Controller``), so the supervisor and the
tests keep their own event loops. It takes any sender and recipient, except addresses
ending in ``@refuse.invalid``, which it refuses with 550 (for testing bounces).
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from confab_infra.ports import free_port, release

REFUSED_DOMAIN = "@refuse.invalid"


class _Handler:
    def __init__(self, catcher: MailCatcher) -> None:
        self.catcher = catcher

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.lower().endswith(REFUSED_DOMAIN):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        self.catcher.keep(bytes(raw), list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


class MailCatcher:
    def __init__(self, directory: Path | None = None, host: str = "127.0.0.1") -> None:
        self.directory = directory
        self.host = host
        self.port = 0
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self._cond = threading.Condition()
        self._controller: Controller | None = None
        self._count = 0

    def start(self) -> MailCatcher:
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        release(self.port)
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def keep(self, raw: bytes, recipients: list[str]) -> None:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._cond:
            self._count += 1
            if self.directory is not None:
                name = f"{time.strftime('%Y%m%dT%H%M%S')}-{self._count:05d}.eml"
                (self.directory / name).write_bytes(raw)
            else:
                self.messages.append((recipients, message))
            self._cond.notify_all()

    def to(self, address: str) -> list[EmailMessage]:
        with self._cond:
            return [m for rcpt, m in self.messages if address in rcpt]

    def wait_for(
        self, check: Callable[[list[tuple[list[str], EmailMessage]]], Any], timeout: float
    ) -> Any:
        """The first truthy ``check(messages)`` within ``timeout`` seconds; None after it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = check(list(self.messages))
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
