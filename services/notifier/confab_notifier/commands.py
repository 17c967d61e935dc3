"""The notifier's commands and queries: preferences, workspace settings and templates,
previews, one-click unsubscribe.

A change is read, patched and checked (``domain``, ``templates``), then appended to
``NOTIFIER`` as the whole new state (``notification.preferences_set``,
``notifier.settings_set``) with the subject's last sequence as the expected one, so two
concurrent patches cannot lose one another (the loser reads again and patches again);
the reply waits until the read model shows it. Every lookup is scoped to the caller's
workspace: another workspace's user, an erased or unknown one, is "not found".
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from confab.bus import IDENTITY, NOTIFIER
from confab.contracts.base import Ok
from confab.contracts.events.identity import subject as identity_subject
from confab.contracts.events.notifier import (
    PreferencesSet,
    PushCredentialsSet,
    PushTargetAdded,
    PushTargetRemoved,
    QuietHours,
    SettingsSet,
    Template,
    subject,
)
from confab.contracts.notifier import (
    AddPushTarget,
    GetPreferences,
    GetPushConfig,
    GetSettings,
    ListPushTargets,
    NotifierSettings,
    Preferences,
    PreferencesPatch,
    Preview,
    PreviewTemplate,
    PushConfig,
    PushCredentialsReply,
    PushTarget,
    PushTargetList,
    RemovePushTarget,
    SetPreferences,
    SetPushCredentials,
    SetSettings,
    Unsubscribe,
)
from confab.egress import check_resolved, check_url
from confab.errors import Conflict, InvalidRequest, NotFound, Unavailable
from confab.eventlog import WrongExpectedVersion, append, last_version
from confab.ids import is_valid_id
from confab.projection import ProjectionRunner
from confab.rpc import CallContext
from confab.shell import Route
from confab_notifier import domain, templates
from confab_notifier.keys import Sealer
from confab_notifier.mail import Tokens
from confab_notifier.push import b64url_decode
from confab_notifier.store import TABLES

NO_USER = "No user with that id."
MAX_PUSH_TARGETS = 20
_PREFS = msgspec.json.Decoder(PreferencesSet)
_SETTINGS = msgspec.json.Decoder(SettingsSet)
SAMPLE = [
    {"author": "Ada", "text": "Is the flat still available next week?"},
    {"author": "Ada", "text": "We would arrive on Friday <3"},
]


class Commands:
    def __init__(
        self,
        engine: AsyncEngine,
        js: JetStreamContext,
        tokens: Tokens,
        settings_runner: ProjectionRunner,
        identity_runner: ProjectionRunner,
        *,
        default_delay: float,
        read_wait: float,
        vapid_public_key: str,
        sealer: Sealer,
        renderer: templates.Renderer,
        allow_private: bool,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.vapid_public_key = vapid_public_key
        self.renderer = renderer
        self.sealer = sealer
        self.allow_private = allow_private
        self.engine = engine
        self.js = js
        self.tokens = tokens
        self.settings_runner = settings_runner
        self.identity_runner = identity_runner
        self.default_delay = default_delay
        self.read_wait = read_wait
        self.clock = clock
        self.t = TABLES

    def routes(self) -> list[Route]:
        return [
            (GetPreferences, self.get_preferences),
            (SetPreferences, self.set_preferences),
            (GetSettings, self.get_settings),
            (SetSettings, self.set_settings),
            (PreviewTemplate, self.preview),
            (Unsubscribe, self.unsubscribe),
            (GetPushConfig, self.push_config),
            (AddPushTarget, self.add_push_target),
            (RemovePushTarget, self.remove_push_target),
            (ListPushTargets, self.push_targets),
            (SetPushCredentials, self.set_push_credentials),
        ]

    # -- preferences ---------------------------------------------------------------------------

    async def _user(self, workspace_id: str, user_id: str) -> None:
        """NotFound unless the user is the workspace's and not erased. A user the read
        model does not know yet is looked for in the log (the last event on its subject):
        none, and it is not found at once; else the read model is waited for, bounded."""
        if not is_valid_id(user_id):
            raise NotFound(NO_USER)
        u = self.t.users
        query = sa.select(u.c.workspace_id, u.c.erased).where(u.c.user_id == user_id)
        for attempt in range(2):
            async with self.engine.connect() as conn:
                row = (await conn.execute(query)).first()
            if row is not None:
                if row.workspace_id != workspace_id or row.erased:
                    break
                return
            if attempt == 0:
                subject_ = identity_subject(workspace_id, "user", user_id)
                stored = await last_version(self.js, IDENTITY.name, subject_)
                if not stored:
                    break
                await self.identity_runner.wait_for(stored, self.read_wait)
        raise NotFound(NO_USER)

    async def _prefs_row(self, user_id: str) -> Any:
        p = self.t.prefs
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.select(p).where(p.c.user_id == user_id))).first()

    async def _current_prefs(self, workspace_id: str, user_id: str) -> Preferences:
        row = await self._prefs_row(user_id)
        event = _PREFS.decode(row.data) if row is not None and row.data else None
        prefs = domain.preferences_of(event)
        return public(user_id, prefs, bool(row is not None and row.email_refused))

    async def get_preferences(self, q: GetPreferences, _ctx: CallContext) -> Preferences:
        await self._user(q.workspace_id, q.user_id)
        return await self._current_prefs(q.workspace_id, q.user_id)

    async def set_preferences(self, c: SetPreferences, _ctx: CallContext) -> Preferences:
        await self._user(c.workspace_id, c.user_id)
        for cid in c.patch.conversations if isinstance(c.patch.conversations, dict) else {}:
            if not is_valid_id(cid):
                raise InvalidRequest(
                    "A conversation id is malformed.", {"conversations": "conversation ids"}
                )
        return await self.change_preferences(c.workspace_id, c.user_id, c.patch, c.by)

    async def change_preferences(
        self, workspace_id: str, user_id: str, patch: PreferencesPatch, by: str
    ) -> Preferences:
        subj = subject(workspace_id, "prefs", user_id)
        for _ in range(5):
            version = await last_version(self.js, NOTIFIER.name, subj)
            row = await self._prefs_row(user_id)
            current = domain.preferences_of(
                _PREFS.decode(row.data) if row is not None and row.data else None
            )
            changes = {
                f: getattr(patch, f)
                for f in patch.__struct_fields__
                if getattr(patch, f) is not msgspec.UNSET
            }
            if "quiet_hours" in changes and changes["quiet_hours"] is not None:
                q = changes["quiet_hours"]
                changes["quiet_hours"] = QuietHours(start=q.start, end=q.end)
            new = domain.patched(current, changes)
            event = PreferencesSet(
                workspace_id=workspace_id,
                user_id=user_id,
                level=new.level,
                conversations=new.conversations,
                quiet_hours=new.quiet_hours,
                time_zone=new.time_zone,
                digest_seconds=new.digest_seconds,
                email=new.email,
                push=new.push,
                language=new.language,
                by=by,
                at=self.clock(),
            )
            try:
                stored = await append(
                    self.js,
                    NOTIFIER.name,
                    subj,
                    event,
                    msg_id=str(uuid.uuid4()),
                    workspace=workspace_id,
                    actor=by,
                    expected_version=version,
                )
            except WrongExpectedVersion:
                continue
            if not await self.settings_runner.wait_for(stored.seq, self.read_wait):
                raise Unavailable("The change is stored but not readable yet; read it again.")
            return await self._current_prefs(workspace_id, user_id)
        raise Unavailable("The preferences changed meanwhile too often; try again.")

    async def unsubscribe(self, c: Unsubscribe, _ctx: CallContext) -> Ok:
        found = self.tokens.check(c.token)
        if found is None:
            raise NotFound("This unsubscribe link is not valid.")
        workspace_id, user_id = found
        try:
            await self._user(workspace_id, user_id)
        except NotFound:
            return Ok()  # erased since: nothing is sent to them anyway
        await self.change_preferences(
            workspace_id, user_id, PreferencesPatch(email=False), "unsubscribe"
        )
        return Ok()

    # -- settings and templates -------------------------------------------------------------

    async def _settings_event(self, workspace_id: str) -> SettingsSet | None:
        s = self.t.settings
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(s.c.data).where(s.c.workspace_id == workspace_id))
            ).first()
        return _SETTINGS.decode(row.data) if row is not None else None

    def _settings_reply(self, event: SettingsSet | None) -> NotifierSettings:
        return NotifierSettings(
            delay_seconds=event.delay_seconds if event else self.default_delay,
            sender_name=event.sender_name if event else "",
            link_url=event.link_url if event else "",
            language=event.language if event else "en",
            templates=dict(event.templates) if event else {},
            default_templates=dict(templates.DEFAULTS),
        )

    async def get_settings(self, q: GetSettings, _ctx: CallContext) -> NotifierSettings:
        return self._settings_reply(await self._settings_event(q.workspace_id))

    async def set_settings(self, c: SetSettings, _ctx: CallContext) -> NotifierSettings:
        subj = subject(c.workspace_id, "settings", c.workspace_id)
        patch = c.patch
        for _ in range(5):
            version = await last_version(self.js, NOTIFIER.name, subj)
            current = await self._settings_event(c.workspace_id)
            own = dict(current.templates) if current else {}
            if isinstance(patch.templates, dict):
                for lang, given in patch.templates.items():
                    if given is None:
                        own.pop(lang.lower(), None)
                    else:
                        own[lang.lower()] = templates.check_template(
                            Template(subject=given.subject, text=given.text, html=given.html)
                        )
            event = SettingsSet(
                workspace_id=c.workspace_id,
                delay_seconds=_given(patch.delay_seconds, current, "delay_seconds",
                                     self.default_delay),
                sender_name=_given(patch.sender_name, current, "sender_name", ""),
                link_url=_given(patch.link_url, current, "link_url", ""),
                language=_given(patch.language, current, "language", "en"),
                templates=own,
                at=self.clock(),
            )  # fmt: skip
            try:
                stored = await append(
                    self.js,
                    NOTIFIER.name,
                    subj,
                    event,
                    msg_id=str(uuid.uuid4()),
                    workspace=c.workspace_id,
                    actor="tenant",
                    expected_version=version,
                )
            except WrongExpectedVersion:
                continue
            if not await self.settings_runner.wait_for(stored.seq, self.read_wait):
                raise Unavailable("The change is stored but not readable yet; read it again.")
            return self._settings_reply(await self._settings_event(c.workspace_id))
        raise Unavailable("The settings changed meanwhile too often; try again.")

    async def preview(self, q: PreviewTemplate, _ctx: CallContext) -> Preview:
        current = await self._settings_event(q.workspace_id)
        language = templates.language_of(q.input.language, "en")
        if q.input.template is not None:
            given = q.input.template
            template = templates.check_template(
                Template(subject=given.subject, text=given.text, html=given.html)
            )
        else:
            template = (current.templates.get(language) if current else None) or (
                templates.DEFAULTS[language]
            )
        sender = (current.sender_name if current else "") or "Confab"
        link = (current.link_url if current else "").replace("{conversation_id}", "conv_example")
        rendered = await self.renderer.render(
            template,
            {
                "recipient": "Sam",
                "sender_name": sender,
                "conversation": "Flat in Lisbon",
                "count": len(SAMPLE),
                "messages": SAMPLE,
                "mentioned": False,
                "link": link,
                "unsubscribe_url": "https://example.invalid/unsubscribe",
            },
        )
        return Preview(subject=rendered.subject, text=rendered.text, html=rendered.html)

    # -- push ----------------------------------------------------------------------------------

    async def push_config(self, _q: GetPushConfig, _ctx: CallContext) -> PushConfig:
        return PushConfig(vapid_public_key=self.vapid_public_key)

    async def _targets(self, user_id: str) -> list[Any]:
        t = self.t.push
        async with self.engine.connect() as conn:
            query = sa.select(t).where(t.c.user_id == user_id).order_by(t.c.created_at, t.c.id)
            return list((await conn.execute(query)).all())

    async def push_targets(self, q: ListPushTargets, _ctx: CallContext) -> PushTargetList:
        await self._user(q.workspace_id, q.user_id)
        rows = await self._targets(q.user_id)
        return PushTargetList(
            data=[
                PushTarget(id=r.id, kind=r.kind, created_at=r.created_at)
                for r in rows
                if not q.kinds or r.kind in q.kinds
            ]
        )

    async def add_push_target(self, c: AddPushTarget, _ctx: CallContext) -> PushTarget:
        await self._user(c.workspace_id, c.user_id)
        if c.kind == "webpush":
            await check_subscription(c.address, c.p256dh, c.auth, self.allow_private)
        target_id = "pt_" + hashlib.sha256(f"{c.kind}:{c.address}".encode()).hexdigest()[:32]
        existing = await self._targets(c.user_id)
        if target_id not in {r.id for r in existing} and len(existing) >= MAX_PUSH_TARGETS:
            raise Conflict(f"A user has at most {MAX_PUSH_TARGETS} push subscriptions and devices.")
        now = self.clock()
        event = PushTargetAdded(
            workspace_id=c.workspace_id,
            user_id=c.user_id,
            target_id=target_id,
            kind=c.kind,
            address=c.address,
            p256dh=c.p256dh,
            auth=c.auth,
            at=now,
        )
        await self._append_prefs(c.workspace_id, c.user_id, event)
        return PushTarget(id=target_id, kind=c.kind, created_at=now)

    async def remove_push_target(self, c: RemovePushTarget, _ctx: CallContext) -> Ok:
        await self._user(c.workspace_id, c.user_id)
        if c.target_id not in {r.id for r in await self._targets(c.user_id)}:
            raise NotFound("No push subscription or device with that id.")
        event = PushTargetRemoved(
            workspace_id=c.workspace_id,
            user_id=c.user_id,
            target_id=c.target_id,
            reason="removed",
            at=self.clock(),
        )
        await self._append_prefs(c.workspace_id, c.user_id, event)
        return Ok()

    async def _append_prefs(self, workspace_id: str, user_id: str, event: Any) -> None:
        stored = await append(
            self.js,
            NOTIFIER.name,
            subject(workspace_id, "prefs", user_id),
            event,
            msg_id=str(uuid.uuid4()),
            workspace=workspace_id,
            actor="tenant",
        )
        if not await self.settings_runner.wait_for(stored.seq, self.read_wait):
            raise Unavailable("The change is stored but not readable yet; read it again.")

    async def set_push_credentials(
        self, c: SetPushCredentials, _ctx: CallContext
    ) -> PushCredentialsReply:
        given = c.input
        if given.fcm is not None:
            _check_key(given.fcm.private_key, rsa.RSAPrivateKey, "fcm.private_key")
        if given.apns is not None:
            _check_key(given.apns.private_key, ec.EllipticCurvePrivateKey, "apns.private_key")
        platforms = [p for p in ("fcm", "apns") if getattr(given, p) is not None]
        event = PushCredentialsSet(
            workspace_id=c.workspace_id,
            sealed=self.sealer.seal(msgspec.json.encode(given)),
            platforms=platforms,
            at=self.clock(),
        )
        stored = await append(
            self.js,
            NOTIFIER.name,
            subject(c.workspace_id, "settings", c.workspace_id),
            event,
            msg_id=str(uuid.uuid4()),
            workspace=c.workspace_id,
            actor="tenant",
        )
        if not await self.settings_runner.wait_for(stored.seq, self.read_wait):
            raise Unavailable("The change is stored but not readable yet; read it again.")
        return PushCredentialsReply(platforms=platforms)


async def check_subscription(endpoint: str, p256dh: str, auth: str, allow_private: bool) -> None:
    """InvalidRequest unless a browser could have made this subscription and its endpoint
    is one outbound requests may reach (``confab.egress``; https unless private addresses
    are allowed)."""
    host, port = check_url(endpoint)
    if not endpoint.startswith("https://") and not allow_private:
        raise InvalidRequest("A push endpoint is https.", {"endpoint": "https://…"})
    await check_resolved(host, port, allow_private, "Push notifications")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(p256dh))
        secret = b64url_decode(auth)
    except (ValueError, TypeError):
        raise InvalidRequest(
            "The subscription's keys are not a browser's.", {"keys": "p256dh, auth"}
        ) from None
    if len(secret) != 16:
        raise InvalidRequest("The auth secret is 16 bytes.", {"keys.auth": "16 bytes"})


def _check_key(pem: str, kind: type, field: str) -> None:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise InvalidRequest("The private key is not a PEM key.", {field: "PEM"}) from None
    if not isinstance(key, kind):
        raise InvalidRequest("The private key is of the wrong kind.", {field: kind.__name__})


def _given(value: Any, current: SettingsSet | None, name: str, default: Any) -> Any:
    if value is not msgspec.UNSET:
        return value
    return getattr(current, name) if current is not None else default


def public(user_id: str, prefs: domain.Preferences, refused: bool) -> Preferences:
    return Preferences(
        user_id=user_id,
        level=prefs.level,
        conversations=dict(prefs.conversations),
        quiet_hours=prefs.quiet_hours,
        time_zone=prefs.time_zone,
        digest_seconds=prefs.digest_seconds,
        email=prefs.email,
        push=prefs.push,
        language=prefs.language,
        email_refused=refused,
    )
