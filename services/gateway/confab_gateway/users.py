"""The consumer backend API (``/api/v1``, ``X-API-Key``): users and widget sessions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from aiohttp import web

from confab.contracts.base import PageLimit, TimeCursor
from confab.contracts.identity import (
    Email,
    EraseUser,
    ExternalId,
    GetUser,
    IssueSession,
    ListUsers,
    RevokeSession,
    Search,
    Session,
    SessionInput,
    SetUserBan,
    UpdateUser,
    UpsertUser,
    User,
    UserInput,
    UserList,
    UserPatch,
    UserSaved,
)
from confab.contracts.messaging import (
    ConversationCursor,
    ConversationList,
    GetUserActivity,
    ListConversations,
    ListUserMessages,
    MessageList,
    UserActivity,
    UserExport,
)
from confab.errors import NotFound
from confab.ids import secret_hash, secret_prefix
from confab.staff import CONVERSATIONS_READ, USERS_BAN, USERS_ERASE
from confab_gateway.api import Call, Result, Router

router = Router()

_encode = msgspec.json.Encoder().encode

USER_ERRORS = (400, 401, 404, 413, 415, 422)


def _actor(call: Call) -> str:
    """Who acts, for the event's ``Confab-Actor``: the tenant's API key (its id)."""
    return call.actor.key_id or ""


@router.route(
    "POST",
    "/api/v1/users",
    auth="api_key",
    tag="users",
    status=201,
    also=(200,),
    summary="Create a user, or update the one with this external_id (201 created, 200 updated)",
    body=UserInput,
    response=User,
    errors=(400, 401, 409, 413, 415, 422),
)
async def upsert_user(call: Call) -> Result:
    saved: UserSaved = await call.rpc.call(
        UpsertUser(workspace_id=call.workspace_id, input=call.body, actor=_actor(call)),
        correlation=call.correlation,
    )
    return Result(saved.user, 201 if saved.created else 200)


class UserQuery(msgspec.Struct, kw_only=True, frozen=True):
    external_id: ExternalId | None = None
    email: Email | None = None
    q: Search | None = None
    updated_since: datetime | None = None
    cursor: TimeCursor | None = None
    limit: PageLimit = 50


@router.route(
    "GET",
    "/api/v1/users",
    auth="api_key",
    permission=CONVERSATIONS_READ,
    tag="users",
    summary="The workspace's users (never erased ones), oldest change first, filtered by "
    "external_id, email, updated_since or q (part of name, email or external id, any "
    "case); page on with next_cursor",
    query=UserQuery,
    response=UserList,
    errors=(401, 422),
)
async def list_users(call: Call) -> UserList:
    q: UserQuery = call.query
    return await call.rpc.call(
        ListUsers(
            workspace_id=call.workspace_id,
            external_id=q.external_id,
            email=q.email,
            q=q.q,
            updated_since=q.updated_since,
            cursor=q.cursor,
            limit=q.limit,
        )
    )


class UserConversationsQuery(msgspec.Struct, kw_only=True, frozen=True):
    cursor: ConversationCursor | None = None
    limit: PageLimit = 50


@router.route(
    "GET",
    "/api/v1/users/{user_id}/conversations",
    auth="api_key",
    permission=CONVERSATIONS_READ,
    tag="users",
    summary="The conversations a user takes part in, newest activity first, with their "
    "unread counts",
    query=UserConversationsQuery,
    response=ConversationList,
    errors=(401, 404, 422),
)
async def user_conversations(call: Call) -> ConversationList:
    user_id = call.path["user_id"]
    await call.rpc.call(GetUser(workspace_id=call.workspace_id, user_id=user_id))  # 404
    q: UserConversationsQuery = call.query
    return await call.rpc.call(
        ListConversations(
            actor=call.actor, user_id=user_id, cursor=q.cursor, limit=q.limit, min_seq=call.min_seq
        )
    )


EXPORT_PAGE = 100


@router.route(
    "GET",
    "/api/v1/users/{user_id}/export",
    auth="api_key",
    permission=USERS_ERASE,
    tag="users",
    summary="A user's data (GDPR): profile, conversations with read marks, reactions and "
    "every message they sent as history shows it, attachments with fresh links; streamed "
    "as one JSON document (a failure midway cuts it short, so it never parses as whole)",
    response=UserExport,
    errors=(401, 404),
)
async def export_user(call: Call) -> web.StreamResponse:
    user_id = call.path["user_id"]
    user: User = await call.rpc.call(GetUser(workspace_id=call.workspace_id, user_id=user_id))
    activity: UserActivity = await call.rpc.call(GetUserActivity(actor=call.actor, user_id=user_id))
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/json",
            "Content-Disposition": f'attachment; filename="user-{user_id}.json"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(call.request)
    head = {
        "user": user,
        "exported_at": datetime.now(UTC),
        "conversations": activity.memberships,
        "reactions": activity.reactions,
    }
    await response.write(_encode(head)[:-1] + b',"messages":[')
    cursor: str | None = None
    first = True
    while True:
        page: MessageList = await call.rpc.call(
            ListUserMessages(actor=call.actor, user_id=user_id, cursor=cursor, limit=EXPORT_PAGE)
        )
        for message in page.data:
            await response.write((b"" if first else b",") + _encode(message))
            first = False
        if not page.has_more or page.next_cursor is None:
            break
        cursor = page.next_cursor
    await response.write(b"]}")
    await response.write_eof()
    return response


@router.route(
    "GET",
    "/api/v1/users/{user_id}",
    auth="api_key",
    permission=CONVERSATIONS_READ,
    tag="users",
    summary="Read a user",
    response=User,
    errors=(401, 404),
)
async def get_user(call: Call) -> User:
    return await call.rpc.call(
        GetUser(workspace_id=call.workspace_id, user_id=call.path["user_id"])
    )


@router.route(
    "PATCH",
    "/api/v1/users/{user_id}",
    auth="api_key",
    tag="users",
    summary="Update some of a user's fields; null clears an optional one",
    body=UserPatch,
    response=User,
    errors=USER_ERRORS,
)
async def update_user(call: Call) -> User:
    saved: UserSaved = await call.rpc.call(
        UpdateUser(
            workspace_id=call.workspace_id,
            user_id=call.path["user_id"],
            patch=call.body,
            actor=_actor(call),
        ),
        correlation=call.correlation,
    )
    return saved.user


@router.route(
    "DELETE",
    "/api/v1/users/{user_id}",
    auth="api_key",
    permission=USERS_ERASE,
    tag="users",
    status=204,
    summary="Erase a user (GDPR): profile data is removed and their sessions end",
    errors=(401, 404),
)
async def erase_user(call: Call) -> None:
    await call.rpc.call(
        EraseUser(workspace_id=call.workspace_id, user_id=call.path["user_id"], actor=_actor(call)),
        correlation=call.correlation,
    )
    call.request.app["auth"].forget(call.path["user_id"])  # their sessions end here too


class BanQuery(msgspec.Struct, kw_only=True, frozen=True):
    duration_seconds: Annotated[int, msgspec.Meta(ge=1, le=10 * 365 * 86400)] | None = None


@router.route(
    "POST",
    "/api/v1/users/{user_id}/ban",
    auth="api_key",
    permission=USERS_BAN,
    tag="users",
    summary="Ban a user from the workspace: they can still read but can no longer post, "
    "and their sockets are closed; with duration_seconds the ban lifts itself after that "
    "long (a user.unbanned identity appends)",
    query=BanQuery,
    response=User,
    errors=(401, 404, 422),
)
async def ban_user(call: Call) -> User:
    return await _set_ban(call, True, call.query.duration_seconds)


@router.route(
    "DELETE",
    "/api/v1/users/{user_id}/ban",
    auth="api_key",
    permission=USERS_BAN,
    tag="users",
    summary="Lift a ban",
    response=User,
    errors=(401, 404),
)
async def unban_user(call: Call) -> User:
    return await _set_ban(call, False)


async def _set_ban(call: Call, banned: bool, seconds: int | None = None) -> User:
    saved: UserSaved = await call.rpc.call(
        SetUserBan(
            workspace_id=call.workspace_id,
            user_id=call.path["user_id"],
            banned=banned,
            actor=_actor(call),
            duration_seconds=seconds,
        ),
        correlation=call.correlation,
    )
    return saved.user


@router.route(
    "POST",
    "/api/v1/sessions",
    auth="api_key",
    tag="sessions",
    status=201,
    summary="Issue a widget session token for a user; the token is shown only here",
    body=SessionInput,
    response=Session,
    errors=USER_ERRORS,
)
async def issue_session(call: Call) -> Session:
    return await call.rpc.call(
        IssueSession(workspace_id=call.workspace_id, input=call.body, actor=_actor(call)),
        correlation=call.correlation,
    )


@router.route(
    "DELETE",
    "/api/v1/sessions/{token}",
    auth="api_key",
    tag="sessions",
    status=204,
    summary="Revoke a session token at once",
    errors=(401, 404),
    raw_path_params=("token",),
)
async def revoke_session(call: Call) -> None:
    token = call.path["token"]
    if not token.startswith("st_") or len(token) > 200:
        raise NotFound("No session with that token.")
    await call.rpc.call(
        RevokeSession(
            workspace_id=call.workspace_id,
            prefix=secret_prefix(token),
            token_hash=secret_hash(token),
            actor=_actor(call),
        ),
        correlation=call.correlation,
    )
    call.request.app["auth"].forget_secret(token)
