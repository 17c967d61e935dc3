"""The dashboard's own API (``/dashboard/api/…``): signing in and out, who is signed in,
the team and its invitations, and socket authorization for staff.

Staff sign in with their workspace, email and password; the session token goes into
the ``HttpOnly`` cookie of ``confab_gateway.sessions`` and never into a body, and the
reply carries the CSRF token the dashboard sends back on every change. Wrong
passwords lock the account in identity (``docs/staff.md``), and count against the
caller's address here as every failed authentication does. Sign-out revokes the
session through identity's ``session.revoked``; sign-out everywhere revokes every
dashboard session of the member; both return once every gateway and fanout node
has dropped them (their sockets close with 4009).

A staff member's socket may subscribe to any conversation channel of their own
workspace while their role grants ``conversations.read``: the signed
``channel_data`` names their user, session and role, and the fanout checks the role
and the conversation's workspace (``confab_fanout.authority``). These routes are the
dashboard's, not the public API: ``/openapi.json`` leaves them out.

Invitations are emailed from the platform's own address, so a workspace may make at
most ``INVITE_BURST`` of them at once, then ``INVITE_PER_HOUR`` an hour (429 with
``Retry-After``): a stolen or careless owner account cannot turn the platform into a
mail cannon. Like every limit of the gateway it is kept per gateway process.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from confab import realtime, support
from confab.contracts.identity import (
    DASHBOARD_SESSION_TTL,
    AcceptInput,
    AcceptInvitation,
    ChangeStaffRole,
    DashboardSession,
    GetWorkspace,
    Invitation,
    InvitationInput,
    InvitationList,
    InvitationWithToken,
    InviteStaff,
    ListInvitations,
    ListStaff,
    RemoveStaff,
    RevokeInvitation,
    RevokeSession,
    RoleInput,
    SignInInput,
    SignOutEverywhere,
    StaffList,
    StaffMember,
    StaffPrincipal,
    StaffSignIn,
    Workspace,
)
from confab.contracts.messaging import (
    Actor,
    CheckParticipant,
    MarkRead,
    ReadInput,
    SetTyping,
    TypingInput,
)
from confab.errors import Forbidden, InvalidRequest, NotFound, RateLimited, Unauthorized
from confab.ids import is_valid_id, secret_hash, secret_prefix
from confab.staff import (
    CONVERSATIONS_READ,
    CONVERSATIONS_REPLY,
    STAFF_MANAGE,
    grants,
    permissions_of,
)
from confab_gateway import sessions
from confab_gateway.api import Call, Router
from confab_gateway.auth import Authenticator
from confab_gateway.broadcasting import (
    CHANNEL_NAME,
    ERRORS,
    ChannelAuthorization,
    UserAuthentication,
    credentials,
    fields_of,
    socket_id_of,
)
from confab_gateway.notifications import email_invitation
from confab_gateway.ratelimit import TokenBuckets, retry_after

router = Router()
API = "/dashboard/api"
ACCEPT_LINK = "/dashboard/#accept="
INVITE_BURST = 20  # invitations a workspace may make at once
INVITE_PER_HOUR = 20  # then this many an hour
_invitations = TokenBuckets(INVITE_PER_HOUR / 3600, INVITE_BURST, clock=time.monotonic)


class Me(msgspec.Struct, kw_only=True, frozen=True):
    """The signed-in staff member, what their role allows, and how to reach the socket."""

    member: StaffMember
    role: str
    permissions: list[str]
    workspace_id: str
    workspace_name: str
    session_id: str
    expires_at: datetime
    csrf_token: str
    app_key: str
    websocket_url: str


class InvitationMade(msgspec.Struct, kw_only=True, frozen=True):
    """The link is shown once, to the inviter; ``email`` says whether it is emailed to the
    invitee too (``pending``: stored to be sent; ``off``: no mail server; ``unavailable``:
    the notifier could not take it; ``confab_gateway.notifications.email_invitation``)."""

    invitation: Invitation
    link: str
    email: str = "off"


def _staff(call: Call) -> StaffPrincipal:
    principal = call.principal
    if not isinstance(principal, StaffPrincipal):
        raise Unauthorized("Sign in to the dashboard first.")
    return principal


async def _me(call: Call, principal: StaffPrincipal, member: StaffMember, token: str) -> Me:
    workspace: Workspace = await call.rpc.call(GetWorkspace(workspace_id=principal.workspace_id))
    return Me(
        member=member,
        role=principal.role,
        permissions=permissions_of(principal.role),
        workspace_id=principal.workspace_id,
        workspace_name=workspace.name,
        session_id=principal.session_id,
        expires_at=principal.expires_at,
        csrf_token=sessions.csrf_token(token),
        app_key=workspace.app_key,
        websocket_url=call.request.app["fanout_ws_url"],
    )


async def _signed_in(call: Call, made: DashboardSession) -> web.Response:
    me = await _me(call, made.principal, made.member, made.token)
    response = web.Response(
        body=msgspec.json.encode(me),
        status=200,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
    sessions.set_cookie(response, call.request, made.token, DASHBOARD_SESSION_TTL)
    return response


# -- signing in and out --------------------------------------------------------------------


@router.route(
    "POST",
    API + "/sign-in",
    auth="public",
    tag="dashboard",
    summary="Sign in with workspace, email and password; sets the session cookie",
    body=SignInInput,
    response=Me,
    errors=(401, 403, 422, 429),
)
async def sign_in(call: Call) -> web.Response:
    sessions.check_origin(call.request)  # no signing a victim in from another site
    auth: Authenticator = call.request.app["auth"]
    address = auth.proxies.client(call.request)
    auth.check_failures(address)
    try:
        made: DashboardSession = await call.rpc.call(StaffSignIn(input=call.body))
    except Unauthorized:
        auth.failed(address)
        raise
    return await _signed_in(call, made)


@router.route(
    "POST",
    API + "/invitations/accept",
    auth="public",
    tag="dashboard",
    summary="Accept an invitation (its link's token) with a name and password; signs in",
    body=AcceptInput,
    response=Me,
    errors=(404, 403, 409, 422, 429),
)
async def accept(call: Call) -> web.Response:
    sessions.check_origin(call.request)
    body: AcceptInput = call.body
    auth: Authenticator = call.request.app["auth"]
    address = auth.proxies.client(call.request)
    auth.check_failures(address)
    token = body.token.strip()
    try:
        made: DashboardSession = await call.rpc.call(
            AcceptInvitation(
                prefix=secret_prefix(token),
                token_hash=secret_hash(token),
                name=body.name,
                password=body.password,
            )
        )
    except NotFound:
        auth.failed(address)  # guessing links counts as failing to authenticate
        raise
    return await _signed_in(call, made)


@router.route(
    "GET",
    API + "/me",
    auth="staff",
    tag="dashboard",
    summary="The signed-in staff member, their permissions and the CSRF token",
    response=Me,
    errors=(401,),
)
async def me(call: Call) -> Me:
    principal = _staff(call)
    team: StaffList = await call.rpc.call(ListStaff(workspace_id=principal.workspace_id))
    member = next((m for m in team.data if m.user_id == principal.user_id), None)
    if member is None:
        raise Unauthorized("You are no longer on this workspace's team.")
    return await _me(call, principal, member, sessions.token_of(call.request))


def _signed_out(call: Call) -> web.Response:
    response = web.Response(status=204, headers={"Cache-Control": "no-store"})
    sessions.clear_cookie(response, call.request)
    return response


@router.route(
    "POST",
    API + "/sign-out",
    auth="staff",
    tag="dashboard",
    summary="Sign out: revoke this dashboard session",
    status=204,
    errors=(401, 403),
)
async def sign_out(call: Call) -> web.Response:
    principal = _staff(call)
    token = sessions.token_of(call.request)
    await call.rpc.call(
        RevokeSession(
            workspace_id=principal.workspace_id,
            prefix=secret_prefix(token),
            token_hash=secret_hash(token),
            actor=principal.user_id,
        )
    )
    call.request.app["auth"].forget_secret(token)
    return _signed_out(call)


@router.route(
    "POST",
    API + "/sign-out-everywhere",
    auth="staff",
    tag="dashboard",
    summary="Sign out everywhere: revoke every dashboard session of the signed-in member",
    status=204,
    errors=(401, 403),
)
async def sign_out_everywhere(call: Call) -> web.Response:
    principal = _staff(call)
    await call.rpc.call(
        SignOutEverywhere(workspace_id=principal.workspace_id, user_id=principal.user_id)
    )
    return _signed_out(call)


# -- the team ------------------------------------------------------------------------------


@router.route(
    "GET",
    API + "/staff",
    auth="staff",
    permission=CONVERSATIONS_READ,
    tag="dashboard",
    summary="The workspace's team (to assign conversations and manage roles)",
    response=StaffList,
    errors=(401, 403),
)
async def list_staff(call: Call) -> StaffList:
    return await call.rpc.call(ListStaff(workspace_id=call.workspace_id))


@router.route(
    "PATCH",
    API + "/staff/{user_id}",
    auth="staff",
    permission=STAFF_MANAGE,
    tag="dashboard",
    summary="Change a team member's role (only an owner gives or takes the owner role)",
    body=RoleInput,
    response=StaffMember,
    errors=(401, 403, 404, 409, 422),
)
async def change_role(call: Call) -> StaffMember:
    principal = _staff(call)
    return await call.rpc.call(
        ChangeStaffRole(
            workspace_id=principal.workspace_id,
            user_id=call.path["user_id"],
            role=call.body.role,
            by=principal.user_id,
        )
    )


@router.route(
    "DELETE",
    API + "/staff/{user_id}",
    auth="staff",
    permission=STAFF_MANAGE,
    tag="dashboard",
    summary="Remove a team member (their dashboard sessions end at once)",
    status=204,
    errors=(401, 403, 404, 409),
)
async def remove_staff(call: Call) -> None:
    principal = _staff(call)
    await call.rpc.call(
        RemoveStaff(
            workspace_id=principal.workspace_id, user_id=call.path["user_id"], by=principal.user_id
        )
    )


@router.route(
    "GET",
    API + "/invitations",
    auth="staff",
    permission=STAFF_MANAGE,
    tag="dashboard",
    summary="Invitations not yet accepted, withdrawn or expired",
    response=InvitationList,
    errors=(401, 403),
)
async def list_invitations(call: Call) -> InvitationList:
    return await call.rpc.call(ListInvitations(workspace_id=call.workspace_id))


@router.route(
    "POST",
    API + "/invitations",
    auth="staff",
    permission=STAFF_MANAGE,
    tag="dashboard",
    status=201,
    summary="Invite someone by email with a role: the link is emailed, and shown once to you; "
    f"at most {INVITE_BURST} at once per workspace, then {INVITE_PER_HOUR} an hour",
    body=InvitationInput,
    response=InvitationMade,
    errors=(401, 403, 422, 429),
)
async def invite(call: Call) -> InvitationMade:
    principal = _staff(call)
    # Taken before, so invitations made at the same moment cannot pass the limit together;
    # given back if refused (already a member, say): a refused invitation costs nothing.
    wait = _invitations.take(principal.workspace_id)
    if wait:
        retry = retry_after(wait)
        raise RateLimited(
            f"Your workspace has sent too many invitations; retry after {retry:g} s.",
            retry_after=retry,
        )
    try:
        made: InvitationWithToken = await call.rpc.call(
            InviteStaff(workspace_id=principal.workspace_id, input=call.body, by=principal.user_id)
        )
    except BaseException:
        _invitations.give_back(principal.workspace_id)
        raise
    link = ACCEPT_LINK + made.token
    email = await email_invitation(call, principal, made, link)
    return InvitationMade(invitation=made.invitation, link=link, email=email)


@router.route(
    "DELETE",
    API + "/invitations/{invitation_id}",
    auth="staff",
    permission=STAFF_MANAGE,
    tag="dashboard",
    status=204,
    summary="Withdraw an invitation: its link stops working",
    errors=(401, 403, 404),
)
async def withdraw(call: Call) -> None:
    principal = _staff(call)
    await call.rpc.call(
        RevokeInvitation(
            workspace_id=principal.workspace_id,
            invitation_id=call.path["invitation_id"],
            by=principal.user_id,
        )
    )


# -- typing and read receipts, as the staff member ------------------------------------------
#
# The tenant API acts with the workspace's authority; these act as the staff member's own
# user, a participant once they replied (messaging refuses anyone else, 404), so the
# visitor sees "Seen by" and "… is typing" from the agent as from any participant.

CONVERSATION = API + "/conversations/{conversation_id}"


def _as_member(principal: StaffPrincipal) -> Actor:
    return Actor(workspace_id=principal.workspace_id, user_id=principal.user_id)


@router.route(
    "POST",
    CONVERSATION + "/read",
    auth="staff",
    permission=CONVERSATIONS_REPLY,
    tag="dashboard",
    status=204,
    summary="Read receipt of the staff member (a participant): up to seq, or the latest",
    body=ReadInput,
    errors=(401, 403, 404, 422),
)
async def read(call: Call) -> None:
    principal = _staff(call)
    ok = await call.rpc.call(
        MarkRead(
            actor=_as_member(principal),
            conversation_id=call.path["conversation_id"],
            seq=call.body.seq,
        )
    )
    call.wrote(ok.seq)


@router.route(
    "POST",
    CONVERSATION + "/typing",
    auth="staff",
    permission=CONVERSATIONS_REPLY,
    tag="dashboard",
    status=204,
    summary="Typing indicator of the staff member (a participant; not stored)",
    body=TypingInput,
    errors=(401, 403, 404, 422),
)
async def typing(call: Call) -> None:
    principal = _staff(call)
    await call.rpc.call(
        SetTyping(
            actor=_as_member(principal),
            conversation_id=call.path["conversation_id"],
            is_typing=call.body.is_typing,
        )
    )


# -- the socket ------------------------------------------------------------------------------


async def _may_watch(call: Call, principal: StaffPrincipal, channel: str) -> None:
    """Forbidden unless the member may subscribe to ``channel``: a conversation of their
    workspace or its inbox, with ``conversations.read``, or their own user channel."""
    conversation_id = realtime.conversation_of(channel)
    if conversation_id is None and channel.startswith(realtime.PRESENCE_PREFIX):
        conversation_id = channel[len(realtime.PRESENCE_PREFIX) :]
    if conversation_id is not None:
        if not is_valid_id(conversation_id) or not grants(principal.role, CONVERSATIONS_READ):
            raise Forbidden(f"You may not subscribe to {channel}.")
        try:
            await call.rpc.call(CheckParticipant(actor=call.actor, conversation_id=conversation_id))
        except NotFound:
            raise Forbidden("No such conversation in your workspace.") from None
        return
    if channel == realtime.user_channel(principal.user_id):
        return
    if channel == support.inbox_channel(principal.workspace_id) and grants(
        principal.role, CONVERSATIONS_READ
    ):
        return  # the live inbox (notes included): the fanout checks the signed role again
    raise Forbidden(f"You may not subscribe to {channel}.")


@router.route(
    "POST",
    API + "/broadcasting/auth",
    auth="staff",
    tag="dashboard",
    summary="Pusher channel authorization for a staff member's socket",
    response=ChannelAuthorization,
    errors=ERRORS,
)
async def channel_auth(call: Call) -> ChannelAuthorization:
    principal = _staff(call)
    fields = await fields_of(call.request)
    socket_id = socket_id_of(fields)
    channel = fields.get("channel_name", "")
    if not CHANNEL_NAME.match(channel):
        raise InvalidRequest(
            "The channel_name is missing or malformed.", {"channel_name": "not a channel name"}
        )
    await _may_watch(call, principal, channel)
    creds = await credentials.get(call.rpc, principal.workspace_id)
    member: dict[str, Any] = {"user_id": principal.user_id}
    if channel.startswith(realtime.PRESENCE_PREFIX):
        member["user_info"] = await _staff_info(call, principal)
    member["session_id"] = principal.session_id
    member["role"] = principal.role
    channel_data = json.dumps(member, separators=(",", ":"), ensure_ascii=False)
    signature = realtime.channel_auth(
        creds.app_key, creds.app_secret, socket_id, channel, channel_data
    )
    return ChannelAuthorization(auth=signature, channel_data=channel_data)


async def _staff_info(call: Call, principal: StaffPrincipal) -> dict[str, Any]:
    team: StaffList = await call.rpc.call(ListStaff(workspace_id=principal.workspace_id))
    member = next((m for m in team.data if m.user_id == principal.user_id), None)
    return {"name": member.name if member else "", "avatar_url": None, "staff": True}


@router.route(
    "POST",
    API + "/broadcasting/user-auth",
    auth="staff",
    tag="dashboard",
    summary="Pusher user authentication (pusher:signin) for a staff member's socket",
    response=UserAuthentication,
    errors=ERRORS,
)
async def user_auth(call: Call) -> UserAuthentication:
    principal = _staff(call)
    socket_id = socket_id_of(await fields_of(call.request))
    creds = await credentials.get(call.rpc, principal.workspace_id)
    user = {
        "id": principal.user_id,
        "user_info": await _staff_info(call, principal),
        "session_id": principal.session_id,
    }
    user_data = json.dumps(user, separators=(",", ":"), ensure_ascii=False)
    signature = realtime.user_auth(creds.app_key, creds.app_secret, socket_id, user_data)
    return UserAuthentication(auth=signature, user_data=user_data)
