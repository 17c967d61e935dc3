"""A workspace's messaging settings: its search language and automatic-moderation rules.

One aggregate per workspace at ``conv.evt.<workspace>._settings`` in
``CONVERSATIONS`` (``confab.contracts.events.moderation``), run by its own small
decider through the same ``Aggregates`` machinery as conversations. Each event
holds the whole setting after the change.

The send path asks ``policy(workspace)`` for the compiled rules and the shadow-banned
users, from the cached aggregate: every messaging copy follows the settings
subjects (``SETTINGS_WATCH``, a ``confab.authority.Follower``) and catches its
cached state up before acknowledging a change, and a change's call returns only
once every live copy has (``fence``). So a change is in force on every copy for
the next post once its call returned, and a post never reads the log for them.
Without a fence (a single process, as in the unit tests) the aggregate is caught
up from the log on every ``policy``. The rules are compiled again only when the
settings' version moved.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from confab.aggregate import Aggregates, Executed
from confab.authority import Change, Watch
from confab.bus import CONVERSATIONS
from confab.contracts.base import Ok
from confab.contracts.events import Event
from confab.contracts.events.moderation import (
    SETTINGS_ID,
    AutomodRule,
    AutomodRulesChanged,
    LinkPreviewsChanged,
    SearchLanguage,
    SearchSettingsChanged,
    UserShadowBanned,
    UserShadowUnbanned,
    settings_subject,
)
from confab.contracts.messaging import Actor
from confab.contracts.moderation import (
    AutomodSettings,
    GetAutomod,
    GetLinkPreviewSettings,
    LinkPreviewSettings,
    RuleInput,
    SetAutomod,
    SetLinkPreviewSettings,
    SetUserShadowBan,
)
from confab.contracts.search import GetSearchSettings, SearchSettings, SetSearchSettings
from confab.decider import NOTHING, Decider, Decision, emit
from confab.errors import Conflict, Forbidden
from confab.eventlog import EventLog
from confab.rpc import CallContext
from confab.shell import CommandShell, Intent, Route
from confab_messaging.automod import NO_RULES, Compiled, check_rules
from confab_messaging.handlers import valid
from confab_messaging.search import DEFAULT_LANGUAGE

COMPILED_CACHE = 10_000  # workspaces whose compiled rules are kept


def settings_change(subject: str, event_type: str, seq: int) -> Change | None:
    """A stored settings event (``conv.evt.<workspace>._settings``) as a follower sees it."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[3] != SETTINGS_ID:
        return None
    return Change(event_type, parts[2], "settings", SETTINGS_ID, seq)


SETTINGS_WATCH = Watch(
    CONVERSATIONS.name, f"conv.evt.*.{SETTINGS_ID}", settings_change, None, "confab-settings"
)


@dataclass
class SettingsState:
    language: str = DEFAULT_LANGUAGE
    rules: list[AutomodRule] = field(default_factory=list)
    dry_run: bool = False
    rules_version: int = 0  # the stream sequence of the last rules change
    shadow_banned: set[str] = field(default_factory=set)  # users whose posts are shadowed
    link_previews: bool = True  # the first link of a message gets a preview


class SetLanguage(msgspec.Struct, kw_only=True, frozen=True):
    workspace_id: str
    language: SearchLanguage
    by: str | None
    now: datetime


class SetRules(msgspec.Struct, kw_only=True, frozen=True):
    workspace_id: str
    rules: list[AutomodRule]
    dry_run: bool
    by: str | None
    now: datetime
    expected_version: int | None = None  # the rules' version the caller read


class SetShadowBan(msgspec.Struct, kw_only=True, frozen=True):
    workspace_id: str
    user_id: str
    banned: bool
    by: str | None
    now: datetime


class SetLinkPreviews(msgspec.Struct, kw_only=True, frozen=True):
    workspace_id: str
    enabled: bool
    by: str | None
    now: datetime


Command = SetLanguage | SetRules | SetShadowBan | SetLinkPreviews


def evolve(state: SettingsState, event: Event) -> SettingsState:
    match event:
        case SearchSettingsChanged():
            state.language = event.language
        case AutomodRulesChanged():
            state.rules = list(event.rules)
            state.dry_run = event.dry_run
        case UserShadowBanned():
            state.shadow_banned.add(event.user_id)
        case UserShadowUnbanned():
            state.shadow_banned.discard(event.user_id)
        case LinkPreviewsChanged():
            state.link_previews = event.enabled
    return state


def stored(state: SettingsState, event: Event, seq: int) -> None:
    if isinstance(event, AutomodRulesChanged):
        state.rules_version = seq


def decide(command: Command, state: SettingsState) -> Decision[None]:
    match command:
        case SetLanguage():
            if command.language == state.language:
                return NOTHING
            return emit(
                SearchSettingsChanged(
                    workspace_id=command.workspace_id,
                    language=command.language,
                    by=command.by,
                    at=command.now,
                )
            )
        case SetRules():
            check_rules(command.rules)
            expected = command.expected_version
            if expected is not None and expected != state.rules_version:
                raise Conflict(
                    f"The rules changed since you read them (version {expected}, now "
                    f"{state.rules_version}); read them again and apply your change to those.",
                    {"version": state.rules_version},
                )
            if command.rules == state.rules and command.dry_run == state.dry_run:
                return NOTHING
            return emit(
                AutomodRulesChanged(
                    workspace_id=command.workspace_id,
                    rules=command.rules,
                    dry_run=command.dry_run,
                    by=command.by,
                    at=command.now,
                )
            )
        case SetShadowBan():
            if (command.user_id in state.shadow_banned) == command.banned:
                return NOTHING
            cls = UserShadowBanned if command.banned else UserShadowUnbanned
            return emit(
                cls(
                    workspace_id=command.workspace_id,
                    user_id=command.user_id,
                    by=command.by,
                    at=command.now,
                )
            )
        case SetLinkPreviews():
            if command.enabled == state.link_previews:
                return NOTHING
            return emit(
                LinkPreviewsChanged(
                    workspace_id=command.workspace_id,
                    enabled=command.enabled,
                    by=command.by,
                    at=command.now,
                )
            )
    raise TypeError(f"not a settings command: {type(command).__name__}")


SETTINGS: Decider[Command, SettingsState] = Decider(
    initial=SettingsState, evolve=evolve, decide=decide, stored=stored
)


def _tenant(actor: Actor) -> str:
    if actor.user_id is not None:
        raise Forbidden("Only the workspace's backend can change its settings.")
    return valid(actor.workspace_id, "Workspace")


def utcnow() -> datetime:
    return datetime.now(UTC)


class WorkspaceSettings:
    """The settings aggregate's commands and queries, and the compiled rules of the send path."""

    def __init__(
        self,
        log: EventLog,
        *,
        clock: Callable[[], datetime] = utcnow,
        settle: Callable[[int], Awaitable[object]] | None = None,
        fence: Callable[[int], Awaitable[object]] | None = None,
    ) -> None:
        self.settle = settle  # waits until the read models (the search index) show a change
        self.fence = fence  # waits until every copy's follower has applied a change
        self.aggregates: Aggregates[Command, SettingsState] = Aggregates(
            log, SETTINGS, cache_size=COMPILED_CACHE
        )
        self.shell = CommandShell(self.aggregates)
        self.clock = clock
        self._compiled: OrderedDict[str, Compiled] = OrderedDict()

    def routes(self) -> list[Route]:
        return [
            (SetSearchSettings, self.shell.handler(self.set_language, self.settled)),
            (GetSearchSettings, self.get_language),
            (SetAutomod, self.shell.handler(self.set_rules, self.fenced)),
            (GetAutomod, self.get_rules),
            (SetUserShadowBan, self.shell.handler(self.set_shadow_ban, self.fenced)),
            (SetLinkPreviewSettings, self.shell.handler(self.set_link_previews, self.fenced)),
            (GetLinkPreviewSettings, self.get_link_previews),
        ]

    async def changed(self, change: Change) -> None:
        """A settings event this copy's follower saw: the cached state catches up."""
        await self.aggregates.refresh(settings_subject(change.workspace_id))

    async def fenced(self, _cmd: object, executed: Executed[SettingsState]) -> Ok:
        """``Ok`` once every messaging copy posts under the change (bounded)."""
        if self.fence is not None and executed.events:
            await self.fence(executed.version)
        return Ok(seq=executed.version)

    async def set_shadow_ban(self, cmd: SetUserShadowBan, _ctx: CallContext) -> Intent[Command]:
        workspace_id = _tenant(cmd.actor)
        command = SetShadowBan(
            workspace_id=workspace_id,
            user_id=valid(cmd.user_id, "User"),
            banned=cmd.banned,
            by=cmd.actor.key_id,
            now=self.clock(),
        )
        return Intent(settings_subject(workspace_id), command, workspace_id, cmd.actor.key_id or "")

    async def set_language(self, cmd: SetSearchSettings, _ctx: CallContext) -> Intent[Command]:
        workspace_id = _tenant(cmd.actor)
        command = SetLanguage(
            workspace_id=workspace_id,
            language=cmd.input.language,
            by=cmd.actor.key_id,
            now=self.clock(),
        )
        return Intent(settings_subject(workspace_id), command, workspace_id, cmd.actor.key_id or "")

    async def settled(self, cmd: object, executed: Executed[SettingsState]) -> Ok:
        """``Ok`` once the search index is in the new language (bounded)."""
        if self.settle is not None:
            await self.settle(executed.version)
        return await self.fenced(cmd, executed)

    async def get_language(self, query: GetSearchSettings, _ctx: CallContext) -> SearchSettings:
        workspace_id = _tenant(query.actor)
        state, _ = await self.aggregates.load(settings_subject(workspace_id), fresh=True)
        return SearchSettings(language=state.language)  # type: ignore[arg-type]

    async def set_rules(self, cmd: SetAutomod, _ctx: CallContext) -> Intent[Command]:
        workspace_id = _tenant(cmd.actor)
        rules = [
            AutomodRule(id=r.id, kind=r.kind, action=r.action, words=r.words, pattern=r.pattern)
            for r in cmd.input.rules
        ]
        check_rules(rules)  # before the turn: a bad rule set never waits for the log
        command = SetRules(
            workspace_id=workspace_id,
            rules=rules,
            dry_run=cmd.input.dry_run,
            by=cmd.actor.key_id,
            now=self.clock(),
            expected_version=cmd.input.version,
        )
        return Intent(settings_subject(workspace_id), command, workspace_id, cmd.actor.key_id or "")

    async def get_rules(self, query: GetAutomod, _ctx: CallContext) -> AutomodSettings:
        workspace_id = _tenant(query.actor)
        state, _ = await self.aggregates.load(settings_subject(workspace_id), fresh=True)
        return AutomodSettings(
            rules=[
                RuleInput(id=r.id, kind=r.kind, action=r.action, words=r.words, pattern=r.pattern)
                for r in state.rules
            ],
            dry_run=state.dry_run,
            version=state.rules_version,
        )

    async def set_link_previews(
        self, cmd: SetLinkPreviewSettings, _ctx: CallContext
    ) -> Intent[Command]:
        workspace_id = _tenant(cmd.actor)
        command = SetLinkPreviews(
            workspace_id=workspace_id,
            enabled=cmd.input.enabled,
            by=cmd.actor.key_id,
            now=self.clock(),
        )
        return Intent(settings_subject(workspace_id), command, workspace_id, cmd.actor.key_id or "")

    async def get_link_previews(
        self, query: GetLinkPreviewSettings, _ctx: CallContext
    ) -> LinkPreviewSettings:
        workspace_id = _tenant(query.actor)
        state, _ = await self.aggregates.load(settings_subject(workspace_id), fresh=True)
        return LinkPreviewSettings(enabled=state.link_previews)

    async def previews_on(self, workspace_id: str) -> bool:
        """Whether the workspace's messages get link previews now (as ``policy`` reads)."""
        subject = settings_subject(workspace_id)
        state, _ = await self.aggregates.load(subject, fresh=self.fence is None)
        return state.link_previews

    async def rules(self, workspace_id: str) -> Compiled:
        """The workspace's rules as the log has them now, compiled once per version."""
        return (await self.policy(workspace_id))[0]

    async def policy(self, workspace_id: str) -> tuple[Compiled, frozenset[str]]:
        """The rules as the log has them now (compiled once per version), and the users
        whose posts are shadowed."""
        subject = settings_subject(workspace_id)
        state, _ = await self.aggregates.load(subject, fresh=self.fence is None)
        shadowed = frozenset(state.shadow_banned)
        if not state.rules:
            return NO_RULES, shadowed
        found = self._compiled.get(workspace_id)
        if found is None or found.version != state.rules_version:
            found = Compiled.build(state.rules_version, state.rules, state.dry_run)
            self._compiled[workspace_id] = found
            while len(self._compiled) > COMPILED_CACHE:
                self._compiled.popitem(last=False)
        self._compiled.move_to_end(workspace_id)
        return found, shadowed
