"""The consumer backend API for conversations (``/api/v1``, ``X-API-Key``).

Tenants create conversations, manage membership, post as a user or as the
system, and moderate what widgets report.
"""

from __future__ import annotations

import msgspec

from confab.contracts.messaging import (
    AddParticipant,
    Conversation,
    ConversationCursor,
    ConversationInput,
    ConversationList,
    ConversationSaved,
    CreateConversation,
    Id,
    Limit,
    ListConversations,
    ListReports,
    Message,
    MessageInput,
    MessageSaved,
    ModerateMessage,
    ModerationInput,
    ParticipantInput,
    PostMessage,
    RemoveParticipant,
    ReportList,
    SeqCursor,
    TenantMessageInput,
)
from confab_gateway.api import Call, Result, Router

router = Router()

WRITE_ERRORS = (400, 401, 404, 413, 415, 422)


class ConversationQuery(msgspec.Struct, kw_only=True, frozen=True):
    user_id: Id | None = None
    cursor: ConversationCursor | None = None
    limit: Limit = 50


class ReportQuery(msgspec.Struct, kw_only=True, frozen=True):
    status: str = "open"
    cursor: SeqCursor | None = None
    limit: Limit = 50


@router.route(
    "POST",
    "/api/v1/conversations",
    auth="api_key",
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
    tag="conversations",
    summary="List conversations, newest activity first (all, or one user's)",
    query=ConversationQuery,
    response=ConversationList,
    errors=(401, 404, 422),
)
async def list_conversations(call: Call) -> ConversationList:
    q: ConversationQuery = call.query
    return await call.rpc.call(
        ListConversations(
            actor=call.actor,
            user_id=q.user_id,
            cursor=q.cursor,
            limit=q.limit,
            min_seq=call.min_seq,
        )
    )


@router.route(
    "POST",
    "/api/v1/conversations/{conversation_id}/participants",
    auth="api_key",
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
            sender_id=body.sender_id,
            input=MessageInput(content=body.content, metadata=body.metadata),
        ),
        correlation=call.correlation,
    )
    call.wrote(saved.stream_seq)
    return saved.message


@router.route(
    "GET",
    "/api/v1/reports",
    auth="api_key",
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
