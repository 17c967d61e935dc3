"""A workspace's messaging settings and automatic moderation, as stored events.

Settings live in ``CONVERSATIONS`` beside the conversations, one subject per
workspace: ``conv.evt.<workspace>._settings`` (``settings_subject``). The id
``_settings`` is never a conversation's (those are ``conv_…`` or derived from
two user ids, never starting with ``_``), and the conversation fold ignores
these types, so readers of conversations pass over them. Each event carries
the whole setting after the change, so a reader needs only the last one of a
kind:

- ``search.settings_changed``: the text-search language of the workspace;
- ``automod.rules_changed``: the automatic-moderation rules and the dry-run switch;
- ``link_previews.settings_changed``: whether messages' links get previews.

What automatic moderation did to a message is recorded with it
(``automod`` in ``message.posted``: the rules that matched and what they did),
a flag adds a system ``message.reported`` (reporter ``automod``), and a post
it refused is a ``message.blocked`` on the conversation (``seq`` 0: a record
for the tenant, outside the conversation's timeline; its content sealed like a
post's).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from confab.contracts.events.base import Event
from confab.contracts.events.messaging import AutomodAction, AutomodHit, ConversationEvent

SETTINGS_ID = "_settings"

# word: any of ``words`` as a whole word (case-insensitive); regex: ``pattern``
# (a restricted syntax, ``confab_messaging.automod``); the detectors take no pattern.
AutomodKind = Literal["word", "regex", "phone", "email", "url"]
# PostgreSQL's built-in text-search configurations (``simple``: no stemming, any language).
SearchLanguage = Literal[
    "simple",
    "arabic",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "hungarian",
    "italian",
    "norwegian",
    "portuguese",
    "romanian",
    "russian",
    "spanish",
    "swedish",
    "turkish",
]


__all__ = ["AutomodAction", "AutomodHit"]


def settings_subject(workspace_id: str) -> str:
    return f"conv.evt.{workspace_id}.{SETTINGS_ID}"


class AutomodRule(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    kind: AutomodKind
    action: AutomodAction
    words: list[str] = []
    pattern: str | None = None


class SearchSettingsChanged(Event, kw_only=True, frozen=True):
    type = "search.settings_changed"
    workspace_id: str
    language: SearchLanguage
    by: str | None = None  # the API key id
    at: datetime


class LinkPreviewsChanged(Event, kw_only=True, frozen=True):
    """Whether the first link of a message gets a preview in this workspace (on, unless
    turned off; the deployment's media policy may still refuse it)."""

    type = "link_previews.settings_changed"
    workspace_id: str
    enabled: bool
    by: str | None = None  # the API key id, or the staff member's user id
    at: datetime


class AutomodRulesChanged(Event, kw_only=True, frozen=True):
    type = "automod.rules_changed"
    workspace_id: str
    rules: list[AutomodRule] = []
    dry_run: bool = False  # every matching rule only flags
    by: str | None = None
    at: datetime


class MessageShadowed(ConversationEvent, kw_only=True, frozen=True):
    """A post only its sender sees (a ``shadow`` rule, or a shadow-banned sender): ``seq``
    0, so it is outside the conversation's timeline and no reader of it (history of
    others, ``/events``, live frames, webhooks, search) ever shows it. Its sender's
    history shows it after the message ``after_seq``."""

    type = "message.shadowed"
    personal = ("content", "metadata")
    owner = "sender_id"
    message_id: str
    sender_id: str
    content: str
    metadata: dict[str, object] = {}
    reply_to: str | None = None
    client_msg_id: str | None = None
    after_seq: int
    automod: list[AutomodHit] = []
    sealed: str | None = None


class MessageShadowEdited(ConversationEvent, kw_only=True, frozen=True):
    """Its sender's edit of a shadowed post (``seq`` 0, like the post: its sender's alone).
    ``content`` is the new text, after automatic moderation (``automod``)."""

    type = "message.shadow_edited"
    personal = ("content",)
    owner = "sender_id"
    message_id: str
    sender_id: str
    content: str
    automod: list[AutomodHit] = []
    sealed: str | None = None


class MessageShadowDeleted(ConversationEvent, kw_only=True, frozen=True):
    """A shadowed post deleted by its sender or the tenant (``seq`` 0): its sender's
    history shows its tombstone."""

    type = "message.shadow_deleted"
    message_id: str
    sender_id: str
    by: str | None = None  # the sender; None: the tenant's backend


class UserShadowBanned(Event, kw_only=True, frozen=True):
    """Every post of the user from now on is shadowed (on the workspace's settings subject)."""

    type = "user.shadow_banned"
    workspace_id: str
    user_id: str
    by: str | None = None
    at: datetime


class UserShadowUnbanned(Event, kw_only=True, frozen=True):
    type = "user.shadow_unbanned"
    workspace_id: str
    user_id: str
    by: str | None = None
    at: datetime


class MessageBlocked(ConversationEvent, kw_only=True, frozen=True):
    """A post automatic moderation refused (``seq`` 0: not part of the timeline)."""

    type = "message.blocked"
    personal = ("content",)
    owner = "sender_id"
    sender_id: str
    content: str
    hits: list[AutomodHit]
    sealed: str | None = None


# -- enforcement in a conversation -------------------------------------------------------------
#
# Freezing takes the conversation's next ``seq`` (clients see it, as a
# ``conversation.updated`` with ``frozen``); mutes and conversation bans are the
# tenant's records (``seq`` 0) that the write side enforces, and a ban also removes
# the user (a ``participant.removed`` of its own). ``until``: when it lifts by itself
# (None: until lifted by hand); the write side compares it with the time of each
# command, so nothing needs to happen when it passes.


class ConversationFrozen(ConversationEvent, kw_only=True, frozen=True):
    """Read-only for the conversation's users: no posts, edits, reactions or client events."""

    type = "conversation.frozen"
    by: str | None = None


class ConversationUnfrozen(ConversationEvent, kw_only=True, frozen=True):
    type = "conversation.unfrozen"
    by: str | None = None


class ParticipantMuted(ConversationEvent, kw_only=True, frozen=True):
    """The user reads but may not post, edit or type here (``seq`` 0)."""

    type = "participant.muted"
    user_id: str
    until: datetime | None = None
    by: str | None = None


class ParticipantUnmuted(ConversationEvent, kw_only=True, frozen=True):
    type = "participant.unmuted"
    user_id: str
    by: str | None = None


class ParticipantBanned(ConversationEvent, kw_only=True, frozen=True):
    """The user is out of this conversation and may not be added back (``seq`` 0)."""

    type = "participant.banned"
    user_id: str
    until: datetime | None = None
    by: str | None = None


class ParticipantUnbanned(ConversationEvent, kw_only=True, frozen=True):
    type = "participant.unbanned"
    user_id: str
    by: str | None = None
