"""The widget API (``/api/widget``, session token): what the embedded chat calls."""

from __future__ import annotations

import asyncio

import msgspec

from confab.contracts.identity import GetUser, GetWorkspace, User, Workspace
from confab.contracts.messaging import (
    ConversationCursor,
    ConversationList,
    ConversationWithMessages,
    DeleteMessage,
    EditInput,
    EditMessage,
    EventList,
    GetConversation,
    Limit,
    ListConversations,
    ListEvents,
    ListMessages,
    MarkRead,
    Message,
    MessageInput,
    MessageList,
    MessageSaved,
    PostMessage,
    React,
    ReactionInput,
    ReadInput,
    ReportInput,
    ReportMessage,
    Seq,
    SetTyping,
    TypingInput,
)
from confab.errors import NotFound
from confab.ids import numeric_app_id
from confab_gateway.api import Call, Result, Router

router = Router()


class Me(msgspec.Struct, kw_only=True, frozen=True):
    user: User
    workspace_id: str
    app_key: str
    # The workspace's Pusher app id: the all-digit alias of workspace_id (server SDKs).
    pusher_app_id: str
    websocket_url: str


@router.route(
    "GET",
    "/api/widget/me",
    auth="session",
    tag="widget",
    summary="The session's user, and where and how to open the real-time socket",
    response=Me,
    errors=(401,),
)
async def me(call: Call) -> Me:
    assert call.principal is not None
    user, workspace = await asyncio.gather(
        call.rpc.call(GetUser(workspace_id=call.workspace_id, user_id=call.principal.user_id)),
        call.rpc.call(GetWorkspace(workspace_id=call.workspace_id)),
    )
    assert isinstance(user, User) and isinstance(workspace, Workspace)
    return Me(
        user=user,
        workspace_id=workspace.id,
        app_key=workspace.app_key,
        pusher_app_id=numeric_app_id(workspace.id),
        websocket_url=call.request.app["fanout_ws_url"],
    )


# -- conversations and messages -----------------------------------------------------------------

CONV = "/api/widget/conversations/{conversation_id}"
MSG = CONV + "/messages/{message_id}"
WRITE_ERRORS = (400, 401, 404, 413, 415, 422)


# The same bounds as the requests they become (confab.contracts): what passes here,
# messaging takes, and /openapi.json states them.
class Page(msgspec.Struct, kw_only=True, frozen=True):
    cursor: ConversationCursor | None = None
    limit: Limit = 50


class History(msgspec.Struct, kw_only=True, frozen=True):
    before: Seq | None = None
    after: Seq | None = None
    limit: Limit = 50


class EventsQuery(msgspec.Struct, kw_only=True, frozen=True):
    after: Seq = 0
    limit: Limit = 100


@router.route(
    "GET",
    "/api/widget/conversations",
    auth="session",
    tag="widget",
    summary="The user's conversations, newest activity first, with unread counts",
    query=Page,
    response=ConversationList,
    errors=(401, 422),
)
async def my_conversations(call: Call) -> ConversationList:
    return await call.rpc.call(
        ListConversations(
            actor=call.actor,
            user_id=call.actor.user_id,
            cursor=call.query.cursor,
            limit=call.query.limit,
            min_seq=call.min_seq,
        )
    )


@router.route(
    "GET",
    CONV,
    auth="session",
    tag="widget",
    summary="One conversation with its latest page of messages",
    response=ConversationWithMessages,
    errors=(401, 404),
)
async def conversation(call: Call) -> ConversationWithMessages:
    return await call.rpc.call(
        GetConversation(
            actor=call.actor, conversation_id=call.path["conversation_id"], min_seq=call.min_seq
        )
    )


@router.route(
    "GET",
    CONV + "/messages",
    auth="session",
    tag="widget",
    summary="History by seq: before (older) or after (newer), oldest first in data",
    query=History,
    response=MessageList,
    errors=(401, 404, 422),
)
async def messages(call: Call) -> MessageList:
    q: History = call.query
    return await call.rpc.call(
        ListMessages(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            before=q.before,
            after=q.after,
            limit=q.limit,
            min_seq=call.min_seq,
        )
    )


@router.route(
    "POST",
    CONV + "/messages",
    auth="session",
    tag="widget",
    status=201,
    also=(200,),
    summary="Send; a resend with the same client_msg_id returns the original (200)",
    body=MessageInput,
    response=Message,
    errors=(*WRITE_ERRORS, 403),
)
async def send(call: Call) -> Result:
    saved: MessageSaved = await call.rpc.call(
        PostMessage(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            sender_id=call.actor.user_id,
            input=call.body,
        ),
        correlation=call.correlation,
    )
    call.wrote(saved.stream_seq)
    return Result(saved.message, 201 if saved.created else 200)


@router.route(
    "PATCH",
    MSG,
    auth="session",
    tag="widget",
    summary="Edit your own message",
    body=EditInput,
    response=Message,
    errors=(*WRITE_ERRORS, 403),
)
async def edit(call: Call) -> Message:
    saved: MessageSaved = await call.rpc.call(
        EditMessage(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            message_id=call.path["message_id"],
            content=call.body.content,
            mentions=call.body.mentions,
        ),
        correlation=call.correlation,
    )
    call.wrote(saved.stream_seq)
    return saved.message


@router.route(
    "DELETE",
    MSG,
    auth="session",
    tag="widget",
    status=204,
    summary="Delete your own message (it stays as a tombstone)",
    errors=(401, 403, 404),
)
async def delete(call: Call) -> None:
    await call.write(
        DeleteMessage(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            message_id=call.path["message_id"],
        ),
    )


@router.route(
    "POST",
    MSG + "/reactions",
    auth="session",
    tag="widget",
    status=204,
    summary="React to a message (once per emoji)",
    body=ReactionInput,
    errors=WRITE_ERRORS,
)
async def react(call: Call) -> None:
    await _react(call, call.body.emoji, add=True)


@router.route(
    "DELETE",
    MSG + "/reactions/{emoji}",
    auth="session",
    tag="widget",
    status=204,
    summary="Take a reaction back",
    errors=(401, 404, 422),
    raw_path_params=("emoji",),
)
async def unreact(call: Call) -> None:
    emoji = call.path["emoji"]
    if not 0 < len(emoji) <= 32:
        raise NotFound("No such reaction.")
    await _react(call, emoji, add=False)


async def _react(call: Call, emoji: str, *, add: bool) -> None:
    await call.write(
        React(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            message_id=call.path["message_id"],
            emoji=emoji,
            add=add,
        )
    )


@router.route(
    "POST",
    CONV + "/read",
    auth="session",
    tag="widget",
    status=204,
    summary="Read receipt: everything up to seq (default: the latest) is read; with "
    "parent_id, in that thread",
    body=ReadInput,
    errors=WRITE_ERRORS,
)
async def read(call: Call) -> None:
    await call.write(
        MarkRead(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            seq=call.body.seq,
            parent_id=call.body.parent_id,
        ),
    )


@router.route(
    "POST",
    CONV + "/typing",
    auth="session",
    tag="widget",
    status=204,
    summary="Typing indicator for the other participants (not stored)",
    body=TypingInput,
    errors=WRITE_ERRORS,
)
async def typing(call: Call) -> None:
    await call.rpc.call(
        SetTyping(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            is_typing=call.body.is_typing,
        )
    )


@router.route(
    "POST",
    "/api/widget/messages/{message_id}/report",
    auth="session",
    tag="widget",
    status=204,
    summary="Report a message to the workspace's moderators",
    body=ReportInput,
    errors=WRITE_ERRORS,
)
async def report(call: Call) -> None:
    await call.write(
        ReportMessage(
            actor=call.actor, message_id=call.path["message_id"], reason=call.body.reason
        ),
    )


@router.route(
    "GET",
    CONV + "/events",
    auth="session",
    tag="widget",
    summary="Everything that happened after a seq, in order, for recovery",
    query=EventsQuery,
    response=EventList,
    errors=(401, 404, 422),
)
async def events(call: Call) -> EventList:
    return await call.rpc.call(
        ListEvents(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            after=call.query.after,
            limit=call.query.limit,
        )
    )
