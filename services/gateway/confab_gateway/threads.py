"""Threads, pins and mentions (issue 23), for the widget and the tenant.

- A thread is a top-level message's replies (posted with ``parent_id`` through the
  ordinary send routes; threads are one level deep). Its page carries the parent as
  it is now and the viewer's read mark and unread count in it; a thread's read mark is
  ``POST …/read`` with ``parent_id``. Replies are conversation events like any
  message, so ``/events``, ``confab:resume`` and ``client_msg_id`` cover them.
- Pins: at most ``MAX_PINS`` per conversation. A participant may pin when the
  conversation's ``pin_policy`` is ``participants`` (the default); the tenant always
  (``permission="moderation"`` for a staff session).
- "Messages mentioning me": ``GET /api/widget/mentions``, newest first, only in
  conversations the user takes part in now, never deleted or hidden ones.
"""

from __future__ import annotations

import msgspec

from confab.contracts.messaging import (
    Id,
    Limit,
    ListMentions,
    ListPins,
    ListThread,
    MessageList,
    PinMessage,
    Seq,
    SeqCursor,
    ThreadPage,
)
from confab_gateway.api import Call, Router

router = Router()

WIDGET_CONV = "/api/widget/conversations/{conversation_id}"
TENANT_CONV = "/api/v1/conversations/{conversation_id}"
MSG = "/messages/{message_id}"


class ThreadQuery(msgspec.Struct, kw_only=True, frozen=True):
    before: Seq | None = None
    after: Seq | None = None
    limit: Limit = 50


class MentionsQuery(msgspec.Struct, kw_only=True, frozen=True):
    conversation_id: Id | None = None
    cursor: SeqCursor | None = None
    limit: Limit = 50


async def _thread(call: Call) -> ThreadPage:
    q: ThreadQuery = call.query
    return await call.rpc.call(
        ListThread(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            parent_id=call.path["message_id"],
            before=q.before,
            after=q.after,
            limit=q.limit,
            min_seq=call.min_seq,
        )
    )


async def _pin(call: Call, pin: bool) -> None:
    await call.write(
        PinMessage(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            message_id=call.path["message_id"],
            pin=pin,
        )
    )


async def _pins(call: Call) -> MessageList:
    return await call.rpc.call(
        ListPins(
            actor=call.actor, conversation_id=call.path["conversation_id"], min_seq=call.min_seq
        )
    )


# -- widget ----------------------------------------------------------------------------------


@router.route(
    "GET",
    WIDGET_CONV + MSG + "/thread",
    auth="session",
    tag="widget",
    summary="A thread: its parent as it is now and a page of its replies by seq, with your "
    "read mark and unread count in it",
    query=ThreadQuery,
    response=ThreadPage,
    errors=(401, 404, 422),
)
async def widget_thread(call: Call) -> ThreadPage:
    return await _thread(call)


@router.route(
    "POST",
    WIDGET_CONV + MSG + "/pin",
    auth="session",
    tag="widget",
    status=204,
    summary="Pin a message (participants, if the conversation's pin_policy allows; at most "
    "25 per conversation: 409 beyond)",
    errors=(401, 403, 404, 409),
)
async def widget_pin(call: Call) -> None:
    await _pin(call, True)


@router.route(
    "DELETE",
    WIDGET_CONV + MSG + "/pin",
    auth="session",
    tag="widget",
    status=204,
    summary="Unpin a message",
    errors=(401, 403, 404),
)
async def widget_unpin(call: Call) -> None:
    await _pin(call, False)


@router.route(
    "GET",
    WIDGET_CONV + "/pins",
    auth="session",
    tag="widget",
    summary="The conversation's pinned messages, most recently pinned first",
    response=MessageList,
    errors=(401, 404),
)
async def widget_pins(call: Call) -> MessageList:
    return await _pins(call)


@router.route(
    "GET",
    "/api/widget/mentions",
    auth="session",
    tag="widget",
    summary="Messages mentioning you, newest first, in the conversations you take part in "
    "(optionally one)",
    query=MentionsQuery,
    response=MessageList,
    errors=(401, 404, 422),
)
async def widget_mentions(call: Call) -> MessageList:
    q: MentionsQuery = call.query
    return await call.rpc.call(
        ListMentions(
            actor=call.actor,
            conversation_id=q.conversation_id,
            cursor=q.cursor,
            limit=q.limit,
            min_seq=call.min_seq,
        )
    )


# -- tenant ----------------------------------------------------------------------------------


@router.route(
    "GET",
    TENANT_CONV + MSG + "/thread",
    auth="api_key",
    tag="conversations",
    summary="A thread: its parent as it is now and a page of its replies by seq",
    query=ThreadQuery,
    response=ThreadPage,
    errors=(401, 404, 422),
    permission="conversations.read",
)
async def tenant_thread(call: Call) -> ThreadPage:
    return await _thread(call)


@router.route(
    "POST",
    TENANT_CONV + MSG + "/pin",
    auth="api_key",
    tag="moderation",
    status=204,
    summary="Pin a message (whatever the conversation's pin_policy; at most 25: 409 beyond)",
    errors=(401, 404, 409),
    permission="moderation",
)
async def tenant_pin(call: Call) -> None:
    await _pin(call, True)


@router.route(
    "DELETE",
    TENANT_CONV + MSG + "/pin",
    auth="api_key",
    tag="moderation",
    status=204,
    summary="Unpin a message",
    errors=(401, 404),
    permission="moderation",
)
async def tenant_unpin(call: Call) -> None:
    await _pin(call, False)


@router.route(
    "GET",
    TENANT_CONV + "/pins",
    auth="api_key",
    tag="conversations",
    summary="The conversation's pinned messages, most recently pinned first",
    response=MessageList,
    errors=(401, 404),
    permission="conversations.read",
)
async def tenant_pins(call: Call) -> MessageList:
    return await _pins(call)
