"""The consumer backend API for conversations (``/api/v1``, ``X-API-Key``).

Tenants create conversations, manage membership, post as a user or as the
system, and moderate what widgets report.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from aiohttp import web

from confab.contracts.events.messaging import ConversationType
from confab.contracts.messaging import (
    METADATA_FILTERS_MAX,
    AddParticipant,
    Conversation,
    ConversationCursor,
    ConversationInput,
    ConversationList,
    ConversationPatch,
    ConversationSaved,
    ConversationWithMessages,
    CreateConversation,
    EventList,
    GetConversation,
    Id,
    Limit,
    ListConversations,
    ListEvents,
    ListModeratedMessages,
    ListReports,
    Message,
    MessageInput,
    MessageSaved,
    ModeratedMessageList,
    ModerateMessage,
    ModerationInput,
    ParticipantInput,
    PostMessage,
    RemoveParticipant,
    ReportList,
    SeqCursor,
    TenantMessageInput,
    UpdateConversation,
)
from confab.errors import InvalidRequest
from confab.staff import CONVERSATIONS_READ, CONVERSATIONS_REPLY, MODERATION
from confab_gateway.api import Call, Result, Router
from confab_gateway.widget import EventsQuery, History

router = Router()

WRITE_ERRORS = (400, 401, 404, 413, 415, 422)


class ConversationQuery(msgspec.Struct, kw_only=True, frozen=True):
    """Also ``metadata.<key>=<value>`` (any number up to 10): see ``list_conversations``."""

    participant_id: Id | None = None
    user_id: Id | None = None  # the same as participant_id (the older name)
    type: ConversationType | None = None
    updated_since: datetime | None = None
    cursor: ConversationCursor | None = None
    limit: Limit = 50


METADATA_PREFIX = "metadata."


def metadata_filters(request: web.Request) -> dict[str, str]:
    """The ``metadata.<key>=<value>`` query parameters, as ``{key: value}``."""
    found = {
        k[len(METADATA_PREFIX) :]: v
        for k, v in request.query.items()
        if k.startswith(METADATA_PREFIX)
    }
    if len(found) > METADATA_FILTERS_MAX:
        raise InvalidRequest(
            "Too many metadata filters.", {"metadata": f"at most {METADATA_FILTERS_MAX}"}
        )
    for key, value in found.items():
        if not 0 < len(key) <= 100 or len(value) > 500 or "\x00" in key + value:
            raise InvalidRequest(
                "A metadata filter is not valid.",
                {f"metadata.{key[:100]}": "a key of 1-100 characters, a value of up to 500"},
            )
    return found


class ReportQuery(msgspec.Struct, kw_only=True, frozen=True):
    status: str = "open"
    cursor: SeqCursor | None = None
    limit: Limit = 50


@router.route(
    "POST",
    "/api/v1/conversations",
    auth="api_key",
    permission=CONVERSATIONS_REPLY,
    tag="conversations",
    status=201,
    also=(200,),
    summary="Create a conversation; a direct one between the same two users is returned "
    "(200), not duplicated",
    body=ConversationInput,
    response=Conversation,
    errors=WRITE_ERRORS,
)
async def create_conversation(call: Call) -> Result:
    saved: ConversationSaved = await call.rpc.call(
        CreateConversation(actor=call.actor, input=call.body), correlation=call.correlation
    )
    call.wrote(saved.stream_seq)
    return Result(saved.conversation, 201 if saved.created else 200)


@router.route(
    "GET",
    "/api/v1/conversations",
    auth="api_key",
    permission=CONVERSATIONS_READ,
    tag="conversations",
    summary="List conversations, newest activity first: all, or filtered by participant, "
    "type, activity since a time, and metadata.<key>=<value> (the conversation's metadata "
    "has that key with that value, as a string or the JSON number, boolean or null it "
    "spells; several are all required; any key, served by a GIN index)",
    query=ConversationQuery,
    response=ConversationList,
    errors=(401, 404, 422),
)
async def list_conversations(call: Call) -> ConversationList:
    q: ConversationQuery = call.query
    if q.participant_id and q.user_id and q.participant_id != q.user_id:
        raise InvalidRequest(
            "participant_id and user_id name the same thing; give one.",
            {"participant_id": "differs from user_id"},
        )
    return await call.rpc.call(
        ListConversations(
            actor=call.actor,
            user_id=q.participant_id or q.user_id,
            kind=q.type,
            metadata=metadata_filters(call.request),
            updated_since=q.updated_since,
            cursor=q.cursor,
            limit=q.limit,
            min_seq=call.min_seq,
        )
    )


@router.route(
    "GET",
    "/api/v1/conversations/{conversation_id}",
    auth="api_key",
    permission=CONVERSATIONS_READ,
    tag="conversations",
    summary="Read one conversation: participants with their read marks, last message, metadata",
    response=Conversation,
    errors=(401, 404),
)
async def get_conversation(call: Call) -> Conversation:
    found: ConversationWithMessages = await call.rpc.call(
        GetConversation(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            limit=1,
            min_seq=call.min_seq,
        )
    )
    return found.conversation


@router.route(
    "PATCH",
    "/api/v1/conversations/{conversation_id}",
    auth="api_key",
    permission=CONVERSATIONS_REPLY,
    tag="conversations",
    summary="Change a conversation's title or metadata: fields left out stay; title null "
    "clears it; metadata is merged key by key at the top level (a key set to null is "
    "removed, an object replaces the old value whole), metadata null clears it all",
    body=ConversationPatch,
    response=Conversation,
    errors=WRITE_ERRORS,
)
async def update_conversation(call: Call) -> Conversation:
    conversation_id = call.path["conversation_id"]
    await call.write(
        UpdateConversation(actor=call.actor, conversation_id=conversation_id, patch=call.body)
    )
    found: ConversationWithMessages = await call.rpc.call(
        GetConversation(
            actor=call.actor, conversation_id=conversation_id, limit=1, min_seq=call.min_seq
        )
    )
    return found.conversation


@router.route(
    "GET",
    "/api/v1/conversations/{conversation_id}/messages",
    auth="api_key",
    permission=CONVERSATIONS_READ,
    tag="conversations",
    summary="History by seq, as the workspace's moderators see it: the widget's shape and "
    "paging, and a message a moderator hid keeps its content, flagged hidden",
    query=History,
    response=ModeratedMessageList,
    errors=(401, 404, 422),
)
async def messages(call: Call) -> ModeratedMessageList:
    q: History = call.query
    return await call.rpc.call(
        ListModeratedMessages(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            before=q.before,
            after=q.after,
            limit=q.limit,
            min_seq=call.min_seq,
        )
    )


@router.route(
    "GET",
    "/api/v1/conversations/{conversation_id}/events",
    auth="api_key",
    permission=CONVERSATIONS_READ,
    tag="conversations",
    summary="Everything that happened after a seq, each message as it is now (docs/authority.md)",
    query=EventsQuery,
    response=EventList,
    errors=(401, 404, 422),
)
async def events(call: Call) -> EventList:
    q: EventsQuery = call.query
    return await call.rpc.call(
        ListEvents(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            after=q.after,
            limit=q.limit,
        )
    )


@router.route(
    "POST",
    "/api/v1/conversations/{conversation_id}/participants",
    auth="api_key",
    permission=CONVERSATIONS_REPLY,
    tag="conversations",
    status=204,
    summary="Add a participant",
    body=ParticipantInput,
    errors=WRITE_ERRORS,
)
async def add_participant(call: Call) -> None:
    await call.write(
        AddParticipant(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            user_id=call.body.user_id,
        ),
    )


@router.route(
    "DELETE",
    "/api/v1/conversations/{conversation_id}/participants/{user_id}",
    auth="api_key",
    permission=CONVERSATIONS_REPLY,
    tag="conversations",
    status=204,
    summary="Remove a participant",
    errors=(401, 404),
)
async def remove_participant(call: Call) -> None:
    await call.write(
        RemoveParticipant(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            user_id=call.path["user_id"],
        ),
    )


@router.route(
    "POST",
    "/api/v1/conversations/{conversation_id}/messages",
    auth="api_key",
    permission=CONVERSATIONS_REPLY,
    tag="conversations",
    status=201,
    summary="Post as a participant (sender_id), or a system message (no sender_id)",
    body=TenantMessageInput,
    response=Message,
    errors=(*WRITE_ERRORS, 403),
)
async def post_tenant_message(call: Call) -> Message:
    body: TenantMessageInput = call.body
    saved: MessageSaved = await call.rpc.call(
        PostMessage(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            sender_id=call.own_sender(body.sender_id),
            input=MessageInput(
                content=body.content,
                metadata=body.metadata,
                type=body.type,
                mentions=body.mentions,
                parent_id=body.parent_id,
            ),
        ),
        correlation=call.correlation,
    )
    call.wrote(saved.stream_seq)
    return saved.message


@router.route(
    "GET",
    "/api/v1/reports",
    auth="api_key",
    permission=MODERATION,
    tag="moderation",
    summary="The moderation queue: reported messages, newest first",
    query=ReportQuery,
    response=ReportList,
    errors=(401, 422),
)
async def list_reports(call: Call) -> ReportList:
    q: ReportQuery = call.query
    status = "all" if q.status == "all" else "open"
    return await call.rpc.call(
        ListReports(actor=call.actor, status=status, cursor=q.cursor, limit=q.limit)
    )


@router.route(
    "POST",
    "/api/v1/messages/{message_id}/moderation",
    auth="api_key",
    permission=MODERATION,
    tag="moderation",
    status=204,
    summary="Hide, restore or delete a message",
    body=ModerationInput,
    errors=WRITE_ERRORS,
)
async def moderate(call: Call) -> None:
    await call.write(
        ModerateMessage(
            actor=call.actor, message_id=call.path["message_id"], action=call.body.action
        ),
    )
