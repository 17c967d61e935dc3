"""Enforcement in a conversation, for the tenant: freeze it, mute or ban a user there, and
list who is muted or banned now.

Each call is an event on the conversation (``confab_messaging.enforcement``), in
force on every path before it returns: posts, edits, reactions and typing over
REST, and client events on the conversation's channels while it is frozen. A
``duration_seconds`` makes a mute or ban lift itself.
"""

from __future__ import annotations

from confab.contracts.moderation import (
    FreezeConversation,
    ListRestrictions,
    RestrictionInput,
    RestrictionList,
    RestrictParticipant,
    SetUserShadowBan,
)
from confab_gateway.api import Call, Router

router = Router()

WRITE_ERRORS = (400, 401, 403, 404, 413, 415, 422)
CONV = "/api/v1/conversations/{conversation_id}"


async def _freeze(call: Call, frozen: bool) -> None:
    await call.write(
        FreezeConversation(
            actor=call.actor, conversation_id=call.path["conversation_id"], frozen=frozen
        )
    )


@router.route(
    "POST",
    f"{CONV}/freeze",
    auth="api_key",
    tag="moderation",
    status=204,
    summary="Freeze a conversation: read-only for its users (posts, edits, reactions, typing "
    "and client events refused with 403 frozen) until thawed; clients get a "
    "conversation.updated with frozen: true",
    errors=(401, 404),
    permission="moderation",
)
async def freeze(call: Call) -> None:
    await _freeze(call, True)


@router.route(
    "DELETE",
    f"{CONV}/freeze",
    auth="api_key",
    tag="moderation",
    status=204,
    summary="Thaw a frozen conversation",
    errors=(401, 404),
    permission="moderation",
)
async def thaw(call: Call) -> None:
    await _freeze(call, False)


async def _restrict(call: Call, kind: str, user_id: str, seconds: int | None, lift: bool) -> None:
    await call.write(
        RestrictParticipant(
            actor=call.actor,
            conversation_id=call.path["conversation_id"],
            kind=kind,  # type: ignore[arg-type]
            user_id=user_id,
            duration_seconds=seconds,
            lift=lift,
        )
    )


@router.route(
    "POST",
    f"{CONV}/mutes",
    auth="api_key",
    tag="moderation",
    status=204,
    summary="Mute a participant here: they read but cannot post, edit or type (403 muted); "
    "with duration_seconds it lifts itself",
    body=RestrictionInput,
    errors=WRITE_ERRORS,
    permission="users.ban",
)
async def mute(call: Call) -> None:
    body: RestrictionInput = call.body
    await _restrict(call, "mute", body.user_id, body.duration_seconds, False)


def _listing(kind: str, plural: str, summary: str) -> None:
    """``GET …/{plural}``: the mutes or bans in force now."""

    async def listed(call: Call) -> RestrictionList:
        return await call.rpc.call(
            ListRestrictions(
                actor=call.actor,
                conversation_id=call.path["conversation_id"],
                kind=kind,  # type: ignore[arg-type]
            )
        )

    listed.__name__ = listed.__qualname__ = plural
    router.route(
        "GET",
        f"{CONV}/{plural}",
        auth="api_key",
        tag="moderation",
        summary=summary,
        response=RestrictionList,
        errors=(401, 404),
        permission="users.ban",
    )(listed)


_listing(
    "mute",
    "mutes",
    "The participants muted here now, by user id, each with until (null: until lifted); "
    "a timed mute that has run out is not listed",
)
_listing(
    "ban",
    "bans",
    "The users banned from this conversation now, by user id, each with until (null: until lifted)",
)


@router.route(
    "DELETE",
    f"{CONV}/mutes/{{user_id}}",
    auth="api_key",
    tag="moderation",
    status=204,
    summary="Lift a mute",
    errors=(401, 404),
    permission="users.ban",
)
async def unmute(call: Call) -> None:
    await _restrict(call, "mute", call.path["user_id"], None, True)


@router.route(
    "POST",
    f"{CONV}/bans",
    auth="api_key",
    tag="moderation",
    status=204,
    summary="Ban a user from a group conversation: removed now (sockets let go), and not "
    "added back until lifted; with duration_seconds it lifts itself",
    body=RestrictionInput,
    errors=WRITE_ERRORS,
    permission="users.ban",
)
async def ban(call: Call) -> None:
    body: RestrictionInput = call.body
    await _restrict(call, "ban", body.user_id, body.duration_seconds, False)


@router.route(
    "DELETE",
    f"{CONV}/bans/{{user_id}}",
    auth="api_key",
    tag="moderation",
    status=204,
    summary="Lift a conversation ban (the user is not added back by it)",
    errors=(401, 404),
    permission="users.ban",
)
async def unban(call: Call) -> None:
    await _restrict(call, "ban", call.path["user_id"], None, True)


async def _shadow_ban(call: Call, banned: bool) -> None:
    await call.write(
        SetUserShadowBan(actor=call.actor, user_id=call.path["user_id"], banned=banned)
    )


@router.route(
    "POST",
    "/api/v1/users/{user_id}/shadow-ban",
    auth="api_key",
    tag="moderation",
    status=204,
    summary="Shadow-ban a user: from the next post on, what they post is shown to them only "
    "(a message.shadowed: never in others' history, sockets, webhooks or search)",
    errors=(401, 404),
    permission="users.ban",
)
async def shadow_ban(call: Call) -> None:
    await _shadow_ban(call, True)


@router.route(
    "DELETE",
    "/api/v1/users/{user_id}/shadow-ban",
    auth="api_key",
    tag="moderation",
    status=204,
    summary="Lift a shadow ban (what was shadowed stays the user's alone)",
    errors=(401, 404),
    permission="users.ban",
)
async def lift_shadow_ban(call: Call) -> None:
    await _shadow_ban(call, False)
