"""Search and the workspace's search settings: requests and replies (messaging answers).

A widget searches the conversations its user is in now; the tenant searches the
whole workspace with filters. A hit is the message as history shows it now
(``contracts.messaging.Message``) with a snippet: ``snippet`` is plain text,
``snippet_html`` the same text HTML-escaped with the matched words in
``<mark>`` (nothing else is markup, so it is safe to insert as it is).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

import msgspec

from confab.contracts.base import Ok, PageLimit, Reply, Request, StreamSeq
from confab.contracts.events.moderation import SearchLanguage
from confab.contracts.messaging import (
    METADATA_FILTERS_MAX,
    Actor,
    Body,
    Message,
    MetadataKey,
    MetadataValue,
)

QueryText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
# (rank, stream sequence) packed and base64url-encoded: 16 bytes, 22 characters.
SearchCursor = Annotated[str, msgspec.Meta(max_length=22, pattern=r"^[A-Za-z0-9_-]{22}$")]


class SearchHit(msgspec.Struct, kw_only=True, frozen=True):
    message: Message
    snippet: str
    snippet_html: str
    rank: float


class SearchResults(Reply, kw_only=True, frozen=True):
    data: list[SearchHit]
    has_more: bool
    next_cursor: str | None = None


class SearchMessages(Request, kw_only=True, frozen=True):
    """Messages matching ``q`` (every word, as a prefix), best first. A widget user sees
    only conversations they are in now; filters are the tenant's."""

    subject: ClassVar[str] = "messaging.q.search_messages"
    reply: ClassVar[type[msgspec.Struct]] = SearchResults
    actor: Actor
    q: QueryText
    conversation_id: str | None = None
    sender_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    has_attachment: bool | None = None
    metadata: Annotated[
        dict[MetadataKey, MetadataValue], msgspec.Meta(max_length=METADATA_FILTERS_MAX)
    ] = {}
    cursor: SearchCursor | None = None
    limit: PageLimit = 20
    min_seq: StreamSeq = 0


class SearchSettings(Reply, kw_only=True, frozen=True):
    language: SearchLanguage


class SearchSettingsInput(Body, kw_only=True, frozen=True):
    language: SearchLanguage


class GetSearchSettings(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.q.get_search_settings"
    reply: ClassVar[type[msgspec.Struct]] = SearchSettings
    actor: Actor


class SetSearchSettings(Request, kw_only=True, frozen=True):
    """Change the workspace's search language: the index is rebuilt in that language."""

    subject: ClassVar[str] = "messaging.cmd.set_search_settings"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    input: SearchSettingsInput
