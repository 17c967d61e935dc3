"""Search, and the workspace's search and automatic-moderation settings.

``GET /api/widget/search`` searches the conversations the session's user is in
now (a conversation they left, or a message deleted, hidden or erased, is
never found); ``GET /api/v1/search`` searches the whole workspace for the
tenant, with filters. Both page by ``next_cursor``. Messaging answers; the
index is its projection (``confab_messaging.search``).

The settings are the tenant's: the text-search language (``search`` tag), the
automatic-moderation rules and the link-preview switch (``moderation`` tag),
each a whole object that replaces the one before.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from confab.contracts.messaging import Id, Limit
from confab.contracts.moderation import (
    AutomodInput,
    AutomodSettings,
    GetAutomod,
    GetLinkPreviewSettings,
    LinkPreviewSettings,
    LinkPreviewSettingsInput,
    SetAutomod,
    SetLinkPreviewSettings,
)
from confab.contracts.search import (
    GetSearchSettings,
    QueryText,
    SearchCursor,
    SearchMessages,
    SearchResults,
    SearchSettings,
    SearchSettingsInput,
    SetSearchSettings,
)
from confab_gateway.api import Call, Router
from confab_gateway.conversations import metadata_filters

router = Router()

WRITE_ERRORS = (400, 401, 413, 415, 422)


class WidgetSearch(msgspec.Struct, kw_only=True, frozen=True):
    q: QueryText
    conversation_id: Id | None = None
    cursor: SearchCursor | None = None
    limit: Limit = 20


class TenantSearch(msgspec.Struct, kw_only=True, frozen=True):
    """Also ``metadata.<key>=<value>``: the conversation's metadata (as in the list of
    conversations)."""

    q: QueryText
    conversation_id: Id | None = None
    sender_id: Id | None = None
    since: datetime | None = None
    until: datetime | None = None
    has_attachment: bool | None = None
    cursor: SearchCursor | None = None
    limit: Limit = 20


@router.route(
    "GET",
    "/api/widget/search",
    auth="session",
    tag="widget",
    summary="Search the messages of the conversations the user is in now (every word, as a "
    "prefix), best first, with highlighted snippets (snippet_html: escaped, matches in "
    "<mark>); never a deleted, hidden or erased message",
    query=WidgetSearch,
    response=SearchResults,
    errors=(401, 404, 422),
)
async def widget_search(call: Call) -> SearchResults:
    q: WidgetSearch = call.query
    return await call.rpc.call(
        SearchMessages(
            actor=call.actor,
            q=q.q,
            conversation_id=q.conversation_id,
            cursor=q.cursor,
            limit=q.limit,
            min_seq=call.min_seq,
        )
    )


@router.route(
    "GET",
    "/api/v1/search",
    auth="api_key",
    tag="search",
    summary="Search the workspace's messages (every word, as a prefix), best first, with "
    "highlighted snippets; filters: conversation, sender, time range (since inclusive, "
    "until exclusive), has_attachment, and metadata.<key>=<value> of the conversation",
    query=TenantSearch,
    response=SearchResults,
    errors=(401, 404, 422),
    permission="conversations.read",
)
async def tenant_search(call: Call) -> SearchResults:
    q: TenantSearch = call.query
    return await call.rpc.call(
        SearchMessages(
            actor=call.actor,
            q=q.q,
            conversation_id=q.conversation_id,
            sender_id=q.sender_id,
            since=q.since,
            until=q.until,
            has_attachment=q.has_attachment,
            metadata=metadata_filters(call.request),
            cursor=q.cursor,
            limit=q.limit,
            min_seq=call.min_seq,
        )
    )


@router.route(
    "GET",
    "/api/v1/settings/search",
    auth="api_key",
    tag="search",
    summary="The workspace's text-search language",
    response=SearchSettings,
    errors=(401,),
    permission="settings.manage",
)
async def get_search_settings(call: Call) -> SearchSettings:
    return await call.rpc.call(GetSearchSettings(actor=call.actor))


@router.route(
    "PUT",
    "/api/v1/settings/search",
    auth="api_key",
    tag="search",
    summary="Set the workspace's text-search language (a PostgreSQL configuration: simple, "
    "english, german, …); the index is rebuilt in it",
    body=SearchSettingsInput,
    response=SearchSettings,
    errors=WRITE_ERRORS,
    permission="settings.manage",
)
async def set_search_settings(call: Call) -> SearchSettings:
    await call.write(SetSearchSettings(actor=call.actor, input=call.body))
    return SearchSettings(language=call.body.language)


@router.route(
    "GET",
    "/api/v1/settings/link-previews",
    auth="api_key",
    tag="moderation",
    summary="Whether the first link of the workspace's messages gets a preview",
    response=LinkPreviewSettings,
    errors=(401,),
    permission="settings.manage",
)
async def get_link_preview_settings(call: Call) -> LinkPreviewSettings:
    return await call.rpc.call(GetLinkPreviewSettings(actor=call.actor))


@router.route(
    "PUT",
    "/api/v1/settings/link-previews",
    auth="api_key",
    tag="moderation",
    summary="Turn link previews on or off for the workspace; in force for the next message "
    "when this returns (previews already attached stay)",
    body=LinkPreviewSettingsInput,
    response=LinkPreviewSettings,
    errors=WRITE_ERRORS,
    permission="settings.manage",
)
async def set_link_preview_settings(call: Call) -> LinkPreviewSettings:
    await call.write(SetLinkPreviewSettings(actor=call.actor, input=call.body))
    return LinkPreviewSettings(enabled=call.body.enabled)


@router.route(
    "GET",
    "/api/v1/moderation/automod",
    auth="api_key",
    tag="moderation",
    summary="The workspace's automatic-moderation rules and dry-run switch",
    response=AutomodSettings,
    errors=(401,),
    permission="moderation",
)
async def get_automod(call: Call) -> AutomodSettings:
    return await call.rpc.call(GetAutomod(actor=call.actor))


@router.route(
    "PUT",
    "/api/v1/moderation/automod",
    auth="api_key",
    tag="moderation",
    summary="Replace the automatic-moderation rules: word lists, RE2 regular expressions "
    "and the phone, email and url detectors, each with an action (block, mask, flag); "
    "dry_run makes every rule only flag. In force for the next post. With version (the "
    "one you read), 409 if the rules changed since",
    body=AutomodInput,
    response=AutomodSettings,
    errors=(*WRITE_ERRORS, 409),
    permission="settings.manage",
)
async def set_automod(call: Call) -> AutomodSettings:
    await call.write(SetAutomod(actor=call.actor, input=call.body))
    return await call.rpc.call(GetAutomod(actor=call.actor))
