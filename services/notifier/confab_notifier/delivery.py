"""The sender: decided notifications (``outbox`` rows) out through every channel.

For each row, in order, each step recorded in the row's ``done`` list once it succeeded
(so a retry repeats none):

1. ``due``: ``notification.due`` appended to ``NOTIFIER`` with the notification's id as
   ``Nats-Msg-Id`` (stored once however often it is tried); the tenant's webhooks carry it.
2. ``email``: if the mail server is configured, the user wants email, has an address
   and it was not refused: the workspace's template (or the default) in the user's
   language, sent over SMTP. The messages are read again here: one deleted or hidden
   since the decision is left out, and if none is left no mail goes. A permanent refusal
   is appended as ``notification.email_refused`` (recorded on the user).

A row whose steps all succeeded is ``sent``; a failing step is tried again later
(doubling from ``retry_seconds``), ``failed`` after ``max_attempts``. Rows are handed
over by the engine right after its commit, and looked for in the owned partitions at
every tick (after a restart, or a retry's time).

Crash window: a mail accepted by the server whose step was not recorded yet is sent
again after a restart, with the same ``Message-ID``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa
from nats.js import JetStreamContext
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from confab.bus import NOTIFIER
from confab.contracts.events.identity import UserUpserted
from confab.contracts.events.messaging import MessageEdited, MessagePosted
from confab.contracts.events.notifier import (
    EmailRefused,
    NotificationDue,
    PreferencesSet,
    PushTargetRemoved,
    SettingsSet,
    Template,
    subject,
)
from confab.errors import InvalidRequest
from confab.eventlog import append
from confab.logging import get_logger
from confab.personal import KeyRing
from confab_notifier import domain, templates
from confab_notifier.mail import Mailer, Refused, Tokens, Unreachable, address_hash, build
from confab_notifier.push import Outcome, Pusher, Target
from confab_notifier.settings import NotifierSettings
from confab_notifier.store import TABLES

log = get_logger("confab.notifier.delivery")

MAX_QUOTED = 5
MAX_QUOTE_CHARS = 500
MAX_PUSH_BODY = 200
BATCH = 256  # notifications one worker takes at once
_USER = msgspec.json.Decoder(UserUpserted)
_PREFS = msgspec.json.Decoder(PreferencesSet)
_SETTINGS = msgspec.json.Decoder(SettingsSet)
_BODIES = {
    MessagePosted.type: msgspec.json.Decoder(MessagePosted),
    MessageEdited.type: msgspec.json.Decoder(MessageEdited),
}


def unsubscribe_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/api/notifications/unsubscribe?token={token}"


@dataclass(frozen=True, slots=True)
class Content:
    prefs: domain.Preferences
    name: str
    address: str
    refused: dict[str, Any] | None
    language: str
    template: Template
    context: dict[str, Any]
    custom: bool = False  # the workspace's own template: rendered by the bounded worker


class Sender:
    def __init__(
        self,
        engine: AsyncEngine,
        js: JetStreamContext,
        keys: KeyRing,
        tokens: Tokens,
        mailer: Mailer,
        renderer: templates.Renderer,
        pusher: Pusher,
        settings: NotifierSettings,
        owned: Callable[[], set[int]],
        clock: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self.js = js
        self.keys = keys
        self.tokens = tokens
        self.mailer = mailer
        self.renderer = renderer
        self.pusher = pusher
        self.s = settings
        self.owned = owned
        self.clock = clock
        self.t = TABLES
        self.sent = 0
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._in_hand: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def offer(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if row["id"] not in self._in_hand:
                self._in_hand.add(row["id"])
                self._queue.put_nowait(row)

    async def start(self, workers: int = 4) -> None:
        self._tasks = [asyncio.create_task(self._poll(), name="notifier-poll")]
        self._tasks += [
            asyncio.create_task(self._work(), name=f"notifier-send-{i}") for i in range(workers)
        ]

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self) -> None:
        o = self.t.outbox
        while not self._stopping.is_set():
            owned = sorted(self.owned())
            if owned:
                try:
                    async with self.engine.connect() as conn:
                        rows = await conn.execute(
                            sa.select(o)
                            .where(o.c.status == "pending", o.c.part.in_(owned))
                            .where(o.c.next_attempt_at <= self.clock())
                            .order_by(o.c.next_attempt_at)
                            .limit(1000)
                        )
                        self.offer([dict(r._mapping) for r in rows])
                except Exception as exc:
                    log.warning("notifier_poll_failed", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(self.s.tick_seconds, 0.5))

    async def _work(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.deliver(batch)
            except Exception:
                log.exception("notifier_delivery_failed", notifications=len(batch))
            finally:
                for row in batch:
                    self._in_hand.discard(row["id"])

    async def deliver(self, rows: list[dict[str, Any]]) -> None:
        """Every step not done yet of these notifications; record the outcomes. Read
        again first: one done meanwhile (a poll read it just before it was recorded) is
        left alone."""
        o = self.t.outbox
        ids = [r["id"] for r in rows]
        async with self.engine.connect() as conn:
            found = await conn.execute(sa.select(o).where(o.c.id.in_(ids), o.c.status == "pending"))
            current = [dict(r._mapping) for r in found]
        if not current:
            return
        errors: dict[str, str] = {}
        todo = [r for r in current if "due" not in r["done"]]
        results = await asyncio.gather(*(self._due(r) for r in todo), return_exceptions=True)
        for row, result in zip(todo, results, strict=True):
            if isinstance(result, BaseException):
                errors[row["id"]] = str(result)[:500] or type(result).__name__
            else:
                row["done"] = [*row["done"], "due"]
        appended = [r["id"] for r in todo if r["id"] not in errors]
        if appended:
            async with self.engine.begin() as conn:
                await conn.execute(
                    o.update()
                    .where(o.c.id.in_(appended))
                    .values(done=o.c.done.op("||")(sa.cast(["due"], JSONB)))
                )
        live = [r for r in current if r["id"] not in errors]
        reachable = await self._reachable(live)
        slots = asyncio.Semaphore(16)

        async def channels(row: dict[str, Any]) -> None:
            if row["user_id"] not in reachable:
                return
            async with slots:
                try:
                    await self._channels(row)
                except Unreachable as exc:
                    errors[row["id"]] = str(exc)[:500]

        await asyncio.gather(*(channels(r) for r in live))
        now = self.clock()
        sent = [r["id"] for r in current if r["id"] not in errors]
        async with self.engine.begin() as conn:
            if sent:
                await conn.execute(
                    o.update()
                    .where(o.c.id.in_(sent))
                    .values(status="sent", done=["due", "email", "push"], sent_at=now)
                )
            for row in current:
                if row["id"] not in errors:
                    continue
                attempts = row["attempts"] + 1
                delay = min(self.s.retry_seconds * 2 ** (attempts - 1), self.s.max_retry_seconds)
                await conn.execute(
                    o.update()
                    .where(o.c.id == row["id"])
                    .values(
                        done=row["done"],
                        attempts=attempts,
                        last_error=errors[row["id"]],
                        next_attempt_at=now + timedelta(seconds=delay),
                        status="failed" if attempts >= self.s.max_attempts else "pending",
                    )
                )
                log.warning("notification_retry", notification=row["id"], error=errors[row["id"]])
        self.sent += len(sent)

    async def _reachable(self, rows: list[dict[str, Any]]) -> set[str]:
        """The users among ``rows``' whom some channel can reach: email (the mail server
        set, their preference, an address) or push (their preference, a target)."""
        users = sorted({r["user_id"] for r in rows})
        if not users:
            return set()
        t = self.t
        targets = (
            sa.select(sa.func.count())
            .where(t.push.c.user_id == t.users.c.user_id)
            .scalar_subquery()
        )
        query = (
            sa.select(t.users.c.user_id, t.users.c.workspace_id, t.users.c.profile,
                      t.prefs.c.data, targets.label("targets"))
            .select_from(t.users.outerjoin(t.prefs, t.prefs.c.user_id == t.users.c.user_id))
            .where(t.users.c.user_id.in_(users), t.users.c.erased.is_(False))
        )  # fmt: skip
        async with self.engine.connect() as conn:
            found = (await conn.execute(query)).all()
        out: set[str] = set()

        async def check(x: Any) -> None:
            prefs = domain.preferences_of(_PREFS.decode(x.data) if x.data else None)
            if prefs.push and x.targets:
                out.add(x.user_id)
            elif self.mailer.enabled and prefs.email and x.profile is not None:
                profile = await self.keys.reveal(x.workspace_id, _USER.decode(x.profile))
                if (profile.email or "").strip():
                    out.add(x.user_id)

        await asyncio.gather(*(check(x) for x in found))
        return out

    async def _channels(self, row: dict[str, Any]) -> None:
        """Email and push for one notification, each step recorded once it succeeded (in
        ``row["done"]`` too, so a failure later records what was done)."""
        done = row["done"]
        content = await self._content(row)
        if content is not None and "email" not in done:
            await self._email(row, content)
            done.append("email")
            await self._record(row["id"], done=done)
        if content is not None and "push" not in done:
            await self._push(row, content, done)

    async def _record(self, notification_id: str, **values: Any) -> None:
        o = self.t.outbox
        async with self.engine.begin() as conn:
            await conn.execute(o.update().where(o.c.id == notification_id).values(**values))

    async def _due(self, row: dict[str, Any]) -> None:
        event = NotificationDue(
            workspace_id=row["workspace_id"],
            notification_id=row["id"],
            user_id=row["user_id"],
            conversation_id=row["conversation_id"],
            message_ids=list(row["message_ids"]),
            count=len(row["message_ids"]),
            first_seq=row["first_seq"],
            last_seq=row["last_seq"],
            mentioned=row["mentioned"],
            channels=["email"] if self.mailer.enabled else [],
            at=row["created_at"],
        )
        try:
            await append(
                self.js,
                NOTIFIER.name,
                subject(row["workspace_id"], "due", row["user_id"]),
                event,
                msg_id=row["id"],
                workspace=row["workspace_id"],
                actor="notifier",
            )
        except Exception as exc:
            raise Unreachable(f"the event log: {exc or type(exc).__name__}") from None

    # -- what a notification says ------------------------------------------------------------

    async def _content(self, row: dict[str, Any]) -> Content | None:
        """What both email and push say, read now; None if there is nothing to say any
        more (the user erased, every message deleted, hidden or its author erased)."""
        ws, uid = row["workspace_id"], row["user_id"]
        t = self.t
        async with self.engine.connect() as conn:
            user = (await conn.execute(sa.select(t.users).where(t.users.c.user_id == uid))).first()
            pref = (await conn.execute(sa.select(t.prefs).where(t.prefs.c.user_id == uid))).first()
            targets = await conn.scalar(sa.select(sa.func.count()).where(t.push.c.user_id == uid))
        if user is None or user.erased or user.profile is None:
            return None
        prefs = domain.preferences_of(_PREFS.decode(pref.data) if pref and pref.data else None)
        profile = await self.keys.reveal(ws, _USER.decode(user.profile))
        address = (profile.email or "").strip()
        mail = self.mailer.enabled and prefs.email and bool(address)
        if not mail and not (prefs.push and targets):
            return None  # no channel reaches the user: nothing to read or render
        async with self.engine.connect() as conn:
            setting = (
                await conn.execute(sa.select(t.settings).where(t.settings.c.workspace_id == ws))
            ).first()
            conv = (
                await conn.execute(
                    sa.select(t.conversations.c.title).where(
                        t.conversations.c.conversation_id == row["conversation_id"]
                    )
                )
            ).first()
            m = t.messages
            messages = (
                await conn.execute(
                    sa.select(m)
                    .where(m.c.conversation_id == row["conversation_id"])
                    .where(m.c.message_id.in_(list(row["message_ids"])))
                    .where(m.c.gone.is_(False))
                    .order_by(m.c.seq)
                )
            ).all()
            senders = {x.sender_id for x in messages if x.sender_id}
            authors = {
                x.user_id: x
                for x in await conn.execute(
                    sa.select(t.users).where(t.users.c.user_id.in_(sorted(senders)))
                )
            }
        messages = [
            x
            for x in messages
            if x.sender_id is None or (x.sender_id in authors and not authors[x.sender_id].erased)
        ]
        if not messages:
            return None
        config = _SETTINGS.decode(setting.data) if setting is not None else None
        language = templates.language_of(prefs.language, config.language if config else "en")
        quoted = []
        for x in messages[-MAX_QUOTED:]:
            body = await self.keys.reveal(ws, _BODIES[x.kind].decode(x.body))
            author = "" if x.sender_id is None else await self._name(ws, authors[x.sender_id])
            quoted.append({"author": author, "text": body.content[:MAX_QUOTE_CHARS]})
        link = ""
        if config and config.link_url:
            link = config.link_url.replace("{conversation_id}", row["conversation_id"])
        own = config.templates.get(language) if config else None
        template = own or templates.DEFAULTS[language]
        context = {
            "recipient": profile.name,
            "sender_name": (config.sender_name if config else "") or "Confab",
            "conversation": (conv.title if conv else None) or "",
            "count": len(messages),
            "messages": quoted,
            "mentioned": row["mentioned"],
            "link": link,
            "unsubscribe_url": unsubscribe_url(self.s.public_url, self.tokens.make(ws, uid)),
        }
        return Content(
            prefs=prefs,
            name=profile.name,
            address=address,
            refused=pref.email_refused if pref is not None else None,
            language=language,
            template=template,
            context=context,
            custom=own is not None,
        )

    # -- email -----------------------------------------------------------------------------

    async def _email(self, row: dict[str, Any], content: Content) -> None:
        if not self.mailer.enabled or not content.prefs.email or not content.address:
            return
        address = content.address
        if content.refused and content.refused.get("address") == address_hash(address):
            return
        context = content.context
        rendered = None
        if content.custom:
            with contextlib.suppress(InvalidRequest):
                rendered = await self.renderer.render(content.template, context)
        if rendered is None:  # the default, or the workspace's failed: the default
            rendered = templates.render(templates.DEFAULTS[content.language], context)
        msg = build(
            rendered,
            sender_name=context["sender_name"],
            from_address=self.s.smtp_from,
            to_name=content.name,
            to_address=address,
            notification_id=row["id"],
            unsubscribe_url=context["unsubscribe_url"],
            language=content.language,
        )
        try:
            await self.mailer.send(msg, address)
        except Refused as exc:
            await self._refused(row, address, exc)

    # -- push ------------------------------------------------------------------------------

    async def _push(self, row: dict[str, Any], content: Content, done: list[str]) -> None:
        """Every push target of the user not pushed to yet; ``Unreachable`` if one must be
        tried again (the others are recorded in ``done``)."""
        if not content.prefs.push:
            return
        p = self.t.push
        async with self.engine.connect() as conn:
            targets = (await conn.execute(sa.select(p).where(p.c.user_id == row["user_id"]))).all()
        if not targets:
            return
        rendered = templates.render(templates.DEFAULTS[content.language], content.context)
        last = content.context["messages"][-1] if content.context["messages"] else None
        body = f"{last['author']}: {last['text']}" if last and last["author"] else ""
        body = (body or (last["text"] if last else ""))[:MAX_PUSH_BODY]
        data = {
            "notification_id": row["id"],
            "conversation_id": row["conversation_id"],
            "count": str(content.context["count"]),
            "url": content.context["link"],
        }
        retry = False
        for target in targets:
            step = f"push:{target.id}"
            if step in done:
                continue
            found = Target(target.id, target.kind, target.address, target.p256dh, target.auth)
            outcome = await self.pusher.send(
                row["workspace_id"], found, rendered.subject, body, data, row["id"]
            )
            if outcome is Outcome.RETRY:
                retry = True
                continue
            if outcome is Outcome.GONE:
                await self._gone(row, target.id, target.kind)
            done.append(step)
            await self._record(row["id"], done=done)
        if retry:
            raise Unreachable("a push service did not take the notification; tried again later")

    async def _gone(self, row: dict[str, Any], target_id: str, kind: str) -> None:
        ws, uid = row["workspace_id"], row["user_id"]
        event = PushTargetRemoved(
            workspace_id=ws,
            user_id=uid,
            target_id=target_id,
            reason=f"{kind}: the push service says it is gone",
            at=datetime.now(UTC),
        )
        await append(
            self.js,
            NOTIFIER.name,
            subject(ws, "prefs", uid),
            event,
            msg_id=f"gone-{target_id}-{row['id']}",
            workspace=ws,
            actor="notifier",
        )
        log.info("push_target_removed", target=target_id, kind=kind)

    async def _name(self, ws: str, author: Any) -> str:
        if author.profile is None:
            return ""
        return (await self.keys.reveal(ws, _USER.decode(author.profile))).name

    async def _refused(self, row: dict[str, Any], address: str, exc: Refused) -> None:
        ws, uid = row["workspace_id"], row["user_id"]
        event = EmailRefused(
            workspace_id=ws,
            user_id=uid,
            notification_id=row["id"],
            address_hash=address_hash(address),
            code=exc.code,
            reason=exc.reason[:500],
            at=datetime.now(UTC),
        )
        await append(
            self.js,
            NOTIFIER.name,
            subject(ws, "prefs", uid),
            event,
            msg_id=f"refused-{row['id']}",
            workspace=ws,
            actor="notifier",
        )
        log.info("email_refused", notification=row["id"], code=exc.code)
