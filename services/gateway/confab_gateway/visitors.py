"""Support settings, agents' availability, and anonymous visitors (issue 19).

The tenant reads and replaces its workspace's support settings
(``/api/v1/support/settings``, permission ``settings.manage``) and sets agents
online or away (``/api/v1/support/agents/{user_id}/availability``). The widget
reads what to show before the first message by the public app key
(``GET /api/widget/support?app_key=…``), and, when the workspace allows
anonymous visitors, gets a visitor session (``POST /api/widget/visitors``):

- only from a page of an allowed origin: the browser's ``Origin`` header must
  be one of ``allowed_origins`` exactly (scheme, host and port), else 403;
- at most ``VISITOR_BURST`` attempts per client address and workspace at once,
  then one per ``1 / VISITOR_RATE`` seconds (429 with ``Retry-After``), so a
  page cannot mint users in bulk (the app key is checked first, one identity
  query, as any request's credentials are);
- the visitor is a user of the workspace (``external_id`` ``visitor:<random>``)
  named by the pre-chat fields the settings ask for (given here, or when the
  visitor starts a conversation, where required ones are checked), with a
  session of ``VISITOR_TTL``; the tenant can later merge it into a known user.

``POST /api/v1/users/{user_id}/merge`` (permission ``users.erase``) merges a
visitor into a user the tenant knows, conversation by conversation
(``participant.merged``): the user takes over the visitor's membership, read
marks and messages, and the history stays whole.

A public key is no secret: the origin check keeps other sites' pages from
using it in browsers, and the rate limit bounds what a script can do with it.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated

import msgspec

from confab.contracts.events.identity import SupportSettings
from confab.contracts.identity import (
    Email,
    GetUser,
    IssueSession,
    Name,
    Session,
    SessionInput,
    UpsertUser,
    UserInput,
)
from confab.contracts.messaging import ConversationList, ListConversations
from confab.contracts.support import (
    AvailabilityInput,
    GetSupportSetup,
    Merged,
    MergeInput,
    MergeParticipant,
    PublicSupport,
    SetAvailability,
    SupportSetup,
)
from confab.contracts.support import ConfigureSupport as Configure
from confab.errors import Forbidden, InvalidRequest, RateLimited
from confab.staff import SETTINGS_MANAGE, grants
from confab_gateway.api import Call, Result, Router
from confab_gateway.ratelimit import TokenBuckets, retry_after
from confab_gateway.support import VISITOR_NAME, VISITOR_PREFIX, staff

router = Router()

VISITOR_RATE = 0.2  # visitor sessions per second per client address, after the burst
VISITOR_BURST = 5
VISITOR_TTL = 30 * 24 * 3600
_visitors = TokenBuckets(VISITOR_RATE, VISITOR_BURST, clock=time.monotonic)

AppKey = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]


@router.route(
    "GET",
    "/api/v1/support/settings",
    auth="api_key",
    tag="support",
    summary="The workspace's support settings and its agents' availability",
    response=SupportSetup,
    errors=(401, 403),
    permission="settings.manage",
)
async def get_settings(call: Call) -> SupportSetup:
    return await call.rpc.call(GetSupportSetup(workspace_id=call.workspace_id))


@router.route(
    "PUT",
    "/api/v1/support/settings",
    auth="api_key",
    tag="support",
    summary="Replace the support settings: enabled, greeting, team_name, team_avatars "
    "(https URLs), reply_time (minutes, hour, day), prechat_name and prechat_email (off, "
    "optional, required), allow_anonymous (needs allowed_origins), allowed_origins "
    "(scheme://host[:port]), round_robin",
    body=SupportSettings,
    response=SupportSetup,
    errors=(400, 401, 403, 413, 415, 422),
    permission="settings.manage",
)
async def put_settings(call: Call) -> SupportSetup:
    actor, me = staff(call)
    return await call.rpc.call(
        Configure(workspace_id=call.workspace_id, settings=call.body, by=me or actor.key_id or ""),
        correlation=call.correlation,
    )


@router.route(
    "PUT",
    "/api/v1/support/agents/{user_id}/availability",
    auth="api_key",
    tag="support",
    summary="Set an agent online or away (round-robin assigns among those online; the "
    'widget\'s "typically replies in" shows while one is)',
    body=AvailabilityInput,
    response=SupportSetup,
    errors=(400, 401, 403, 404, 413, 415, 422),
    permission="conversations.reply",
)
async def set_availability(call: Call) -> SupportSetup:
    staff_member = call.staff
    if (
        staff_member is not None
        and call.path["user_id"] != staff_member.user_id
        and not grants(staff_member.role, SETTINGS_MANAGE)
    ):
        raise Forbidden("You can set only your own availability.")
    return await call.rpc.call(
        SetAvailability(
            workspace_id=call.workspace_id,
            user_id=call.path["user_id"],
            status=call.body.status,
        ),
        correlation=call.correlation,
    )


# -- the widget --------------------------------------------------------------------------------


class PublicQuery(msgspec.Struct, kw_only=True, frozen=True):
    app_key: AppKey


async def _setup(call: Call, app_key: str) -> SupportSetup:
    return await call.rpc.call(GetSupportSetup(app_key=app_key))


def public_view(setup: SupportSetup) -> PublicSupport:
    s = setup.settings
    return PublicSupport(
        enabled=s.enabled,
        greeting=s.greeting,
        team_name=s.team_name,
        team_avatars=list(s.team_avatars),
        reply_time=s.reply_time,
        team_online=any(a.status == "online" for a in setup.agents),
        prechat_name=s.prechat_name,
        prechat_email=s.prechat_email,
        allow_anonymous=s.allow_anonymous and s.enabled,
    )


@router.route(
    "GET",
    "/api/widget/support",
    auth="public",
    tag="widget",
    summary="What the widget shows before the first message, by the workspace's public "
    "app key: greeting, team, reply time, whether the team is online, pre-chat fields",
    query=PublicQuery,
    response=PublicSupport,
    errors=(404, 422),
)
async def public_support(call: Call) -> PublicSupport:
    return public_view(await _setup(call, call.query.app_key))


class VisitorInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    app_key: AppKey
    name: Name | None = None
    email: Email | None = None


@router.route(
    "POST",
    "/api/widget/visitors",
    auth="public",
    tag="widget",
    status=201,
    summary="A session for an anonymous visitor, from a page of an allowed origin "
    "(Origin header), when the workspace allows anonymous visitors; rate-limited per "
    "address",
    body=VisitorInput,
    response=Session,
    errors=(400, 403, 404, 413, 415, 422, 429),
)
async def new_visitor(call: Call) -> Result:
    body: VisitorInput = call.body
    request = call.request
    setup = await _setup(call, body.app_key)
    address = request.app["auth"].proxies.client(request) or "unknown"
    wait = _visitors.take(f"{setup.workspace_id} {address}")
    if wait:
        retry = retry_after(wait)
        raise RateLimited(
            f"Too many new visitors from your address; retry after {retry:g} s.",
            retry_after=retry,
        )
    settings = setup.settings
    origin = request.headers.get("Origin", "")
    if not (settings.enabled and settings.allow_anonymous):
        raise Forbidden("This workspace does not take messages from anonymous visitors.")
    if origin not in settings.allowed_origins:
        raise Forbidden("This page's origin may not use the workspace's widget key.")
    saved = await call.rpc.call(
        UpsertUser(
            workspace_id=setup.workspace_id,
            input=UserInput(
                external_id=VISITOR_PREFIX + secrets.token_urlsafe(12),
                name=(body.name if settings.prechat_name != "off" else None) or VISITOR_NAME,
                email=body.email if settings.prechat_email != "off" else None,
                metadata={"visitor": True},
            ),
            actor="visitor",
        ),
        correlation=call.correlation,
    )
    session: Session = await call.rpc.call(
        IssueSession(
            workspace_id=setup.workspace_id,
            input=SessionInput(user_id=saved.user.id, ttl_seconds=VISITOR_TTL),
            actor="visitor",
        ),
        correlation=call.correlation,
    )
    return Result(session, 201)


# -- merging a visitor into a known user -------------------------------------------------------

MERGE_PAGES_MAX = 1000  # pages of 100 conversations: far more than one visitor has


@router.route(
    "POST",
    "/api/v1/users/{user_id}/merge",
    auth="api_key",
    tag="users",
    summary="Merge a visitor into this user, keeping the history: the user takes over the "
    "visitor's conversations, read marks and messages (participants see the visitor leave, "
    "with merged_into)",
    body=MergeInput,
    response=Merged,
    errors=(400, 401, 403, 404, 413, 415, 422),
    permission="users.erase",
)
async def merge(call: Call) -> Merged:
    user_id, visitor_id = call.path["user_id"], call.body.visitor_id
    if user_id == visitor_id:
        raise InvalidRequest("A user cannot be merged into itself.", {"visitor_id": "another user"})
    for who in (user_id, visitor_id):  # 404 for either unknown, or another workspace's
        await call.rpc.call(GetUser(workspace_id=call.workspace_id, user_id=who))
    actor, merged = call.actor, 0
    for _ in range(MERGE_PAGES_MAX):
        page: ConversationList = await call.rpc.call(
            ListConversations(actor=actor, user_id=visitor_id, limit=100, min_seq=call.min_seq)
        )
        if not page.data:
            break
        for conversation in page.data:
            await call.write(
                MergeParticipant(
                    actor=actor,
                    conversation_id=conversation.id,
                    visitor_id=visitor_id,
                    user_id=user_id,
                )
            )
            merged += 1
    return Merged(user_id=user_id, visitor_id=visitor_id, conversations=merged)
