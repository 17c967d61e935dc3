"""Automatic moderation rules: requests and replies (messaging answers).

The rules themselves (``AutomodRule``) are the stored contract of
``confab.contracts.events.moderation``; what is here may change with the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from confab.contracts.base import Ok, Reply, Request
from confab.contracts.events.moderation import AutomodAction, AutomodKind
from confab.contracts.messaging import Actor, Body

RuleId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Word = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Pattern = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class RuleInput(Body, kw_only=True, frozen=True):
    id: RuleId
    kind: AutomodKind
    action: AutomodAction
    words: Annotated[list[Word], msgspec.Meta(max_length=200)] = []
    pattern: Pattern | None = None


class AutomodInput(Body, kw_only=True, frozen=True):
    """The whole rule set: it replaces the one before. ``version``: the one you read
    (``AutomodSettings.version``); if the rules changed since, nothing is replaced and
    the answer is 409 (left out: the last write wins)."""

    rules: Annotated[list[RuleInput], msgspec.Meta(max_length=50)] = []
    dry_run: bool = False
    version: Annotated[int, msgspec.Meta(ge=0)] | None = None


class AutomodSettings(Reply, kw_only=True, frozen=True):
    rules: list[RuleInput]
    dry_run: bool
    version: int  # the stream sequence of the last change (0: never set)


class GetAutomod(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.q.get_automod"
    reply: ClassVar[type[msgspec.Struct]] = AutomodSettings
    actor: Actor


class SetAutomod(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.set_automod"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    input: AutomodInput


# -- link previews ------------------------------------------------------------------------------


class LinkPreviewSettings(Reply, kw_only=True, frozen=True):
    enabled: bool  # the first link of a message gets a preview


class LinkPreviewSettingsInput(Body, kw_only=True, frozen=True):
    enabled: bool


class GetLinkPreviewSettings(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.q.get_link_preview_settings"
    reply: ClassVar[type[msgspec.Struct]] = LinkPreviewSettings
    actor: Actor


class SetLinkPreviewSettings(Request, kw_only=True, frozen=True):
    """Turn link previews on or off for the workspace, in force for the next message."""

    subject: ClassVar[str] = "messaging.cmd.set_link_preview_settings"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    input: LinkPreviewSettingsInput


# -- enforcement in a conversation -------------------------------------------------------------

DurationSeconds = Annotated[int, msgspec.Meta(ge=1, le=10 * 365 * 86400)]


class RestrictionInput(Body, kw_only=True, frozen=True):
    """Mute or ban ``user_id``; ``duration_seconds``: it lifts itself after that long
    (left out: until lifted)."""

    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    duration_seconds: DurationSeconds | None = None


class FreezeConversation(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.freeze_conversation"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    conversation_id: str
    frozen: bool


class RestrictParticipant(Request, kw_only=True, frozen=True):
    """Mute (``kind`` "mute") or ban ("ban") a user in a conversation, or ``lift`` it."""

    subject: ClassVar[str] = "messaging.cmd.restrict_participant"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    conversation_id: str
    kind: Literal["mute", "ban"]
    user_id: str
    duration_seconds: DurationSeconds | None = None
    lift: bool = False


class Restriction(msgspec.Struct, kw_only=True, frozen=True):
    """A mute or ban in force: on ``user_id`` until ``until`` (None: until lifted)."""

    user_id: str
    until: datetime | None = None


class RestrictionList(Reply, kw_only=True, frozen=True):
    data: list[Restriction]


class ListRestrictions(Request, kw_only=True, frozen=True):
    """The mutes (``kind`` "mute") or bans ("ban") in force in a conversation now, as
    its log says (the decider's own state), by user id."""

    subject: ClassVar[str] = "messaging.q.list_restrictions"
    reply: ClassVar[type[msgspec.Struct]] = RestrictionList
    actor: Actor
    conversation_id: str
    kind: Literal["mute", "ban"]


class SetUserShadowBan(Request, kw_only=True, frozen=True):
    """Shadow-ban a user (``banned``): their posts from now on are seen by them only."""

    subject: ClassVar[str] = "messaging.cmd.set_user_shadow_ban"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    user_id: str
    banned: bool
