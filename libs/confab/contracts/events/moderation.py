"""A workspace's messaging settings and automatic moderation, as stored events.

Settings live in ``CONVERSATIONS`` beside the conversations, one subject per
workspace: ``conv.evt.<workspace>._settings`` (``settings_subject``). The id
``_settings`` is never a conversation's (those are ``conv_…`` or derived from
two user ids, never starting with ``_``), and the conversation fold ignores
these types, so readers of conversations pass over them. Each event carries
the whole setting after the change, so a reader needs only the last one of a
kind:

- ``search.settings_changed``: the text-search language of the workspace;
- ``automod.rules_changed``: the automatic-moderation rules and the dry-run switch.

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


class AutomodRulesChanged(Event, kw_only=True, frozen=True):
    type = "automod.rules_changed"
    workspace_id: str
    rules: list[AutomodRule] = []
    dry_run: bool = False  # every matching rule only flags
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
