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

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from confab.bus import IDENTITY, NOTIFIER
from confab.contracts.base import Ok
from confab.contracts.events.notifier import (
    PreferencesSet,
    QuietHours,
    SettingsSet,
    Template,
    subject,
)
from confab.contracts.notifier import (
    GetPreferences,
    GetSettings,
    NotifierSettings,
    Preferences,
    PreferencesPatch,
    Preview,
    PreviewTemplate,
    SetPreferences,
    SetSettings,
    Unsubscribe,
)
from confab.errors import InvalidRequest, NotFound, Unavailable
from confab.eventlog import WrongExpectedVersion, append, last_version
from confab.ids import is_valid_id
from confab.projection import ProjectionRunner
from confab.rpc import CallContext
from confab.shell import Route
from confab_notifier import domain, templates
from confab_notifier.mail import Tokens
from confab_notifier.store import TABLES

NO_USER = "No user with that id."
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
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
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
        ]

    # -- preferences ---------------------------------------------------------------------------

    async def _user(self, workspace_id: str, user_id: str) -> None:
        """NotFound unless the user is the workspace's and not erased (waiting, bounded,
        for a user created just now to reach the read model)."""
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
                info = await self.js.stream_info(IDENTITY.name)
                await self.identity_runner.wait_for(info.state.last_seq, self.read_wait)
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
        rendered = templates.render(
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
