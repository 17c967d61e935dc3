"""Staff invitations by email: the invitee gets the accept link from the workspace's sender
name, in the workspace's language, with a plain-text and an HTML part (docs/staff.md).

How the link travels. Identity makes the invitation and its secret and answers the
gateway with it (the inviter still sees the link once). The gateway then asks the
notifier over NATS request/reply (``MailInvitation``) and answers the inviter only after
the notifier replied, which it does once ``notifier.invitation_mail_requested`` is
acknowledged by JetStream: the mail is durable before the invite call returns. That
event carries the link, the address and the names **sealed** (AES-256-GCM with the
deployment's key, ``keys.Sealer``, bound to the invitation id), so no stream holds the
secret in clear; the request/reply itself is core NATS, never stored. Chosen over
sealing the token into identity's ``invitation.created``: identity and its event stay as
they are, and the secret is sealed by the only service that ever needs to open it.

Who gets it. The requests (``NOTIFIER``, subjects ``notify.evt.*.invitation.*``) are
projected into ``invitation_mail`` rows; identity's ``invitation.accepted`` and
``invitation.revoked`` into ``invitation_closed``, from a consumer of ``IDENTITY`` of
its own (the notifier may not call identity). A row is sent by one copy at a time (its
row lock, ``SKIP LOCKED``); just before sending, an invitation that was withdrawn,
accepted or has expired is ``cancelled`` instead, and never sent. The two streams are
projected independently, so a withdrawal a moment before the send may not be seen yet:
the mail then goes with a link that no longer works (identity refuses it, 404).

Outcomes are events too (``invitation_mail_sent``, ``invitation_mail_refused``), so a
rebuilt read model sends nothing twice. A permanent refusal (5xx) is recorded and not
tried again; other failures are retried, doubling from ``retry_seconds``, up to
``max_attempts``. Crash window, as for notifications: a mail the server accepted whose
outcome was not appended yet goes again, with the same ``Message-ID``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import msgspec
import sqlalchemy as sa
from nats.js import JetStreamContext
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from confab.bus import IDENTITY, NOTIFIER
from confab.contracts.events.identity import InvitationAccepted, InvitationRevoked
from confab.contracts.events.notifier import (
    InvitationMailRefused,
    InvitationMailRequested,
    InvitationMailSent,
    SettingsSet,
    Template,
    subject,
)
from confab.contracts.notifier import GetInvitationMail, InvitationMail, MailInvitation
from confab.errors import NotFound
from confab.eventlog import append, last_version
from confab.events import Envelope
from confab.ids import is_valid_id
from confab.logging import get_logger
from confab.projection import Projection, ProjectionRunner
from confab.rpc import CallContext
from confab.shell import Route
from confab_notifier import templates
from confab_notifier.keys import Sealer
from confab_notifier.mail import Mailer, Refused, Unreachable, address_hash, build
from confab_notifier.settings import NotifierSettings
from confab_notifier.store import SCHEMA, define_tables

log = get_logger("confab.notifier.invitations")

KIND = "invitation"
NOT_FOUND = "No invitation email with that id in this workspace."
BATCH = 20  # invitations one copy sends per round


class Secret(msgspec.Struct, kw_only=True, frozen=True):
    """What is sealed in ``notifier.invitation_mail_requested``."""

    link: str  # the accept link's path, with the invitation's token
    email: str
    workspace_name: str = ""
    inviter_name: str = ""


_SECRET = msgspec.json.Decoder(Secret)
_SETTINGS = msgspec.json.Decoder(SettingsSet)


def context_of(invitation_id: str) -> bytes:
    return b"confab.notifier.invitation/" + invitation_id.encode()


def define(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    ts = sa.DateTime(timezone=True)
    mail = sa.Table(
        "invitation_mail",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),  # the invitation's
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", ts, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("refused", JSONB),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("sent_at", ts),
        sa.Index("invitation_mail_due", "status", "next_attempt_at"),
    )
    closed = sa.Table(
        "invitation_closed",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("why", sa.Text, nullable=False),  # accepted, revoked
        sa.Column("at", ts, nullable=False),
    )
    return mail, closed


class InvitationMailProjection(Projection):
    """The notifier's own invitation events into ``invitation_mail``."""

    stream = NOTIFIER.name
    subjects = (subject("*", KIND, "*"),)

    def __init__(self, woken: Callable[[], None] = lambda: None) -> None:
        self.name = "notifier.invitation_mail"
        self.metadata = sa.MetaData(schema=SCHEMA)
        self.mail, _ = define(self.metadata)
        self.woken = woken
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        m = self.mail
        for envelope in events:
            event = envelope.event
            if isinstance(event, InvitationMailRequested):
                await conn.execute(
                    insert(m)
                    .values(
                        id=event.invitation_id,
                        workspace_id=event.workspace_id,
                        role=event.role,
                        sealed=event.sealed,
                        expires_at=event.expires_at,
                        next_attempt_at=event.at,
                        created_at=event.at,
                    )
                    .on_conflict_do_nothing(index_elements=[m.c.id])
                )
            elif isinstance(event, InvitationMailSent):
                await conn.execute(
                    m.update()
                    .where(m.c.id == event.invitation_id)
                    .values(status="sent", sent_at=event.at)
                )
            elif isinstance(event, InvitationMailRefused):
                refused = {"address": event.address_hash, "code": event.code,
                           "reason": event.reason, "at": event.at.isoformat()}  # fmt: skip
                await conn.execute(
                    m.update()
                    .where(m.c.id == event.invitation_id)
                    .values(status="refused", refused=refused)
                )

    def committed(self) -> None:
        self.woken()


class InvitationStateProjection(Projection):
    """Identity's accepted and withdrawn invitations into ``invitation_closed``."""

    stream = IDENTITY.name
    subjects = ("identity.evt.*.invitation.*",)

    def __init__(self) -> None:
        self.name = "notifier.invitation_state"
        self.metadata = sa.MetaData(schema=SCHEMA)
        _, self.closed = define(self.metadata)
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        c = self.closed
        for envelope in events:
            event = envelope.event
            why = {InvitationAccepted: "accepted", InvitationRevoked: "revoked"}.get(type(event))
            if why is None:
                continue
            assert isinstance(event, InvitationAccepted | InvitationRevoked)
            await conn.execute(
                insert(c)
                .values(id=event.invitation_id, workspace_id=event.workspace_id, why=why,
                        at=event.at)
                .on_conflict_do_nothing(index_elements=[c.c.id])
            )  # fmt: skip


class Invitations:
    """Answers ``MailInvitation`` and ``GetInvitationMail``; sends what is due."""

    def __init__(
        self,
        engine: AsyncEngine,
        js: JetStreamContext,
        sealer: Sealer,
        mailer: Mailer,
        settings: NotifierSettings,
        clock: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self.js = js
        self.sealer = sealer
        self.mailer = mailer
        self.s = settings
        self.clock = clock
        metadata = sa.MetaData(schema=SCHEMA)
        self.mail, self.closed = define(metadata)
        self.settings = define_tables(metadata).settings
        self.runner: ProjectionRunner | None = None  # of InvitationMailProjection
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def routes(self) -> list[Route]:
        return [(MailInvitation, self.request), (GetInvitationMail, self.status)]

    # -- the requests ---------------------------------------------------------------------

    async def request(self, c: MailInvitation, ctx: CallContext) -> InvitationMail:
        if not (is_valid_id(c.workspace_id) and is_valid_id(c.invitation_id)):
            raise NotFound(NOT_FOUND)
        if not self.mailer.enabled:
            return InvitationMail(invitation_id=c.invitation_id, status="off")
        secret = Secret(
            link=c.link,
            email=c.email.strip(),
            workspace_name=c.workspace_name,
            inviter_name=c.inviter_name,
        )
        sealed = self.sealer.seal(msgspec.json.encode(secret), context_of(c.invitation_id))
        event = InvitationMailRequested(
            workspace_id=c.workspace_id,
            invitation_id=c.invitation_id,
            role=c.role,
            expires_at=c.expires_at,
            sealed=sealed,
            at=self.clock(),
        )
        await self._append(c.workspace_id, c.invitation_id, event, "requested", ctx.correlation)
        return InvitationMail(invitation_id=c.invitation_id, status="pending")

    async def status(self, q: GetInvitationMail, _ctx: CallContext) -> InvitationMail:
        """The email's state. One asked for but not in the read model yet (a status read
        right after the invitation) is waited for, bounded."""
        if not (is_valid_id(q.workspace_id) and is_valid_id(q.invitation_id)):
            raise NotFound(NOT_FOUND)
        m = self.mail
        query = sa.select(m).where(m.c.id == q.invitation_id)
        for attempt in range(2):
            async with self.engine.connect() as conn:
                row = (await conn.execute(query)).first()
            if row is not None or attempt or self.runner is None:
                break
            where = subject(q.workspace_id, KIND, q.invitation_id)
            stored = await last_version(self.js, NOTIFIER.name, where)
            if not stored:
                break
            await self.runner.wait_for(stored, self.s.read_wait_seconds)
        if row is None or row.workspace_id != q.workspace_id:
            raise NotFound(NOT_FOUND)
        return InvitationMail(
            invitation_id=row.id,
            status=row.status,
            attempts=row.attempts,
            last_error=row.last_error,
            refused_code=(row.refused or {}).get("code"),
        )

    async def _append(
        self, ws: str, invitation_id: str, event: object, step: str, correlation: str = ""
    ) -> None:
        await append(
            self.js,
            NOTIFIER.name,
            subject(ws, KIND, invitation_id),
            event,  # type: ignore[arg-type]
            msg_id=f"invitation-{step}-{invitation_id}",
            workspace=ws,
            actor="notifier",
            correlation=correlation,
        )

    # -- sending --------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notifier-invitations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.send_due()
            except Exception:
                log.exception("invitation_mail_round_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(self.s.tick_seconds, 0.5))

    async def send_due(self) -> None:
        """Each due invitation, locked while it is sent: cancelled if it no longer
        stands, else sent (or its failure recorded)."""
        if not self.mailer.enabled:
            return
        m, c = self.mail, self.closed
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    sa.select(m, c.c.why)
                    .select_from(m.outerjoin(c, c.c.id == m.c.id))
                    .where(m.c.status == "pending", m.c.next_attempt_at <= self.clock())
                    .order_by(m.c.next_attempt_at)
                    .limit(BATCH)
                    .with_for_update(of=m, skip_locked=True)
                )
            ).all()
            for row in rows:
                values = await self._one(row)
                await conn.execute(m.update().where(m.c.id == row.id).values(**values))

    async def _one(self, row: sa.Row) -> dict[str, object]:
        now = self.clock()
        if row.why is not None or row.expires_at <= now:
            log.info("invitation_mail_cancelled", invitation=row.id, why=row.why or "expired")
            return {"status": "cancelled"}
        plain = self.sealer.open_sealed(row.sealed, context_of(row.id))
        if plain is None:  # sealed with a key this deployment no longer has
            return {"status": "failed", "last_error": "the sealed link cannot be opened"}
        secret = _SECRET.decode(plain)
        try:
            try:
                msg = await self._message(row, secret)
            except Exception as exc:  # never a row retried at every tick: it backs off
                log.exception("invitation_mail_not_written", invitation=row.id)
                raise Unreachable(f"the mail could not be written: {type(exc).__name__}") from None
            await self.mailer.send(msg, secret.email)
        except Refused as exc:
            refused = InvitationMailRefused(
                workspace_id=row.workspace_id,
                invitation_id=row.id,
                address_hash=address_hash(secret.email),
                code=exc.code,
                reason=exc.reason[:500],
                at=now,
            )
            await self._append(row.workspace_id, row.id, refused, "refused")
            log.info("invitation_mail_refused", invitation=row.id, code=exc.code)
            return {"status": "refused", "attempts": row.attempts + 1,
                    "refused": {"address": refused.address_hash, "code": exc.code,
                                "reason": refused.reason, "at": now.isoformat()}}  # fmt: skip
        except Unreachable as exc:
            attempts = row.attempts + 1
            delay = min(self.s.retry_seconds * 2 ** (attempts - 1), self.s.max_retry_seconds)
            log.warning("invitation_mail_retry", invitation=row.id, error=str(exc))
            return {
                "attempts": attempts,
                "last_error": str(exc)[:500],
                "next_attempt_at": now + timedelta(seconds=delay),
                "status": "failed" if attempts >= self.s.max_attempts else "pending",
            }
        sent = InvitationMailSent(workspace_id=row.workspace_id, invitation_id=row.id, at=now)
        with contextlib.suppress(Exception):  # the row says sent; the event is the record
            await self._append(row.workspace_id, row.id, sent, "sent")
        return {"status": "sent", "sent_at": now, "attempts": row.attempts + 1}

    async def _message(self, row: sa.Row, secret: Secret) -> object:
        async with self.engine.connect() as conn:
            found = (
                await conn.execute(
                    sa.select(self.settings.c.data).where(
                        self.settings.c.workspace_id == row.workspace_id
                    )
                )
            ).first()
        config = _SETTINGS.decode(found.data) if found is not None else None
        language = templates.language_of(config.language if config else None, "en")
        workspace = secret.workspace_name or "Confab"
        sender = (config.sender_name if config else "") or workspace
        context = {
            "workspace": workspace,
            "inviter": secret.inviter_name,
            "role": ROLES[language].get(row.role, row.role),
            "link": self.s.public_url.rstrip("/") + secret.link,
            "expires": row.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
            "sender_name": sender,
        }
        rendered = templates.render(TEMPLATES[language], context)
        return build(
            rendered,
            sender_name=sender,
            from_address=self.s.smtp_from,
            to_name="",
            to_address=secret.email,
            notification_id=f"invitation-{row.id}",
            unsubscribe_url="",
            language=language,
        )


# -- the email, in every language the widget has -----------------------------------------------

ROLES: dict[str, dict[str, str]] = {
    "en": {"owner": "owner", "admin": "admin", "agent": "agent", "moderator": "moderator"},
    "de": {"owner": "Inhaber", "admin": "Admin", "agent": "Agent", "moderator": "Moderator"},
    "fr": {"owner": "propriétaire", "admin": "administrateur", "agent": "agent",
           "moderator": "modérateur"},
    "es": {"owner": "propietario", "admin": "administrador", "agent": "agente",
           "moderator": "moderador"},
    "pt": {"owner": "proprietário", "admin": "administrador", "agent": "agente",
           "moderator": "moderador"},
    "ar": {"owner": "مالك", "admin": "مسؤول", "agent": "وكيل", "moderator": "مشرف"},
}  # fmt: skip

_STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "subject": "{% if inviter %}{{ inviter }} invited you to {{ workspace }}"
        "{% else %}You are invited to {{ workspace }}{% endif %}",
        "intro": "{% if inviter %}{{ inviter }} invited you{% else %}You are invited{% endif %}"
        " to join the team of {{ workspace }} as {{ role }}.",
        "accept": "Accept the invitation",
        "note": "The link works once and expires on {{ expires }}. If you did not expect "
        "this invitation, ignore this email.",
    },
    "de": {
        "subject": "{% if inviter %}{{ inviter }} hat Sie zu {{ workspace }} eingeladen"
        "{% else %}Einladung zu {{ workspace }}{% endif %}",
        "intro": "{% if inviter %}{{ inviter }} hat Sie eingeladen{% else %}Sie sind "
        "eingeladen{% endif %}, dem Team von {{ workspace }} als {{ role }} beizutreten.",
        "accept": "Einladung annehmen",
        "note": "Der Link funktioniert einmal und läuft am {{ expires }} ab. Wenn Sie diese "
        "Einladung nicht erwartet haben, ignorieren Sie diese E-Mail.",
    },
    "fr": {
        "subject": "{% if inviter %}{{ inviter }} vous invite à rejoindre {{ workspace }}"
        "{% else %}Invitation à rejoindre {{ workspace }}{% endif %}",
        "intro": "{% if inviter %}{{ inviter }} vous invite{% else %}Vous êtes invité{% endif %}"
        " à rejoindre l'équipe de {{ workspace }} en tant que {{ role }}.",
        "accept": "Accepter l'invitation",
        "note": "Le lien fonctionne une seule fois et expire le {{ expires }}. Si vous "
        "n'attendiez pas cette invitation, ignorez cet e-mail.",
    },
    "es": {
        "subject": "{% if inviter %}{{ inviter }} te invitó a {{ workspace }}"
        "{% else %}Invitación a {{ workspace }}{% endif %}",
        "intro": "{% if inviter %}{{ inviter }} te invitó{% else %}Te invitaron{% endif %}"
        " a unirte al equipo de {{ workspace }} como {{ role }}.",
        "accept": "Aceptar la invitación",
        "note": "El enlace funciona una vez y caduca el {{ expires }}. Si no esperabas esta "
        "invitación, ignora este correo.",
    },
    "pt": {
        "subject": "{% if inviter %}{{ inviter }} convidou você para {{ workspace }}"
        "{% else %}Convite para {{ workspace }}{% endif %}",
        "intro": "{% if inviter %}{{ inviter }} convidou você{% else %}Você foi convidado"
        "{% endif %} para entrar na equipe de {{ workspace }} como {{ role }}.",
        "accept": "Aceitar o convite",
        "note": "O link funciona uma vez e expira em {{ expires }}. Se não esperava este "
        "convite, ignore este e-mail.",
    },
    "ar": {
        "subject": "{% if inviter %}{{ inviter }} دعاك إلى {{ workspace }}"
        "{% else %}دعوة إلى {{ workspace }}{% endif %}",
        "intro": "{% if inviter %}دعاك {{ inviter }}{% else %}أنت مدعو{% endif %}"
        " للانضمام إلى فريق {{ workspace }} بصفة {{ role }}.",
        "accept": "قبول الدعوة",
        "note": "يعمل الرابط مرة واحدة وتنتهي صلاحيته في {{ expires }}. إذا لم تكن تتوقع "
        "هذه الدعوة، فتجاهل هذه الرسالة.",
    },
}

_TEXT = """{intro}

{accept}: {{{{ link }}}}

{note}
--
{{{{ sender_name }}}}
"""

_HTML = """<!doctype html>
<html lang="{lang}" dir="{dir}"><body style="font-family:sans-serif;line-height:1.4">
<p>{intro}</p>
<p><a href="{{{{ link }}}}">{accept}</a></p>
<p style="font-size:small;color:#666">{note}</p>
<p style="font-size:small;color:#666">{{{{ sender_name }}}}</p>
</body></html>
"""


def _template(language: str) -> Template:
    s = _STRINGS[language]
    parts = {k: s[k] for k in ("intro", "accept", "note")}
    direction = "rtl" if language == "ar" else "ltr"
    return Template(
        subject=s["subject"],
        text=_TEXT.format(**parts),
        html=_HTML.format(lang=language, dir=direction, **parts),
    )


TEMPLATES = {language: _template(language) for language in templates.LANGUAGES}
