"""Notifications: users' preferences, the workspace's notifier settings and email
templates, and one-click unsubscribe (``docs/notifications.md``).

The notifier service owns all of it; every route is one request to it, scoped to the
caller's workspace (another workspace's user is "not found"). A widget user reads and
changes only their own preferences. The unsubscribe address is the one in every
notification email's ``List-Unsubscribe`` header (RFC 8058): a POST turns email off for
the user the signed token names; a GET (what a link scanner or a click does) shows a
page with a button that POSTs, and changes nothing by itself.

Web push subscriptions are the signed-in user's own: the widget's session user, or the
dashboard's staff member (``/dashboard/api/push…``, cookie session). The dashboard's
service worker is served here at ``/dashboard/push-worker.js`` (the widget's file, with
the dashboard's scope); the widget's is a plain widget file.

A staff invitation is also emailed (``email_invitation``, called by the dashboard's invite
route): the link goes to the notifier in a request, which answers once it stored it
sealed (``confab_notifier.invitations``); ``GET /dashboard/api/invitations/{id}/email``
tells the inviter whether it went, or why not.
"""

from __future__ import annotations

import asyncio
import html
from pathlib import Path
from typing import Annotated

import msgspec
from aiohttp import web

from confab.contracts.base import Ok
from confab.contracts.identity import (
    GetWorkspace,
    InvitationWithToken,
    ListStaff,
    StaffList,
    StaffPrincipal,
    Workspace,
)
from confab.contracts.notifier import (
    AddPushTarget,
    DeviceInput,
    GetInvitationMail,
    GetPreferences,
    GetPushConfig,
    GetSettings,
    InvitationMail,
    ListPushTargets,
    MailInvitation,
    NotifierSettings,
    Preferences,
    PreferencesPatch,
    Preview,
    PreviewInput,
    PreviewTemplate,
    PushConfig,
    PushCredentialsInput,
    PushCredentialsReply,
    PushSubscriptionInput,
    PushTarget,
    PushTargetList,
    RemovePushTarget,
    SetPreferences,
    SetPushCredentials,
    SetSettings,
    SettingsPatch,
    Unsubscribe,
)
from confab.errors import ConfabError, Unauthorized
from confab.logging import get_logger
from confab.staff import STAFF_MANAGE
from confab_gateway.api import Call, Router
from confab_gateway.auth import SessionPrincipal

router = Router()
log = get_logger("confab.gateway.notifications")

USER_PREFS = "/api/v1/users/{user_id}/notification-preferences"
SETTINGS = "/api/v1/notification-settings"
WIDGET_PREFS = "/api/widget/notification-preferences"
UNSUBSCRIBE = "/api/notifications/unsubscribe"
WRITE_ERRORS = (400, 401, 404, 413, 415, 422)


class UnsubscribeQuery(msgspec.Struct, kw_only=True, frozen=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]


@router.route(
    "GET",
    USER_PREFS,
    auth="api_key",
    tag="notifications",
    summary="A user's notification preferences",
    response=Preferences,
    errors=(401, 404),
    permission="conversations.read",
)
async def get_user_preferences(call: Call) -> Preferences:
    return await call.rpc.call(
        GetPreferences(workspace_id=call.workspace_id, user_id=call.path["user_id"]),
        correlation=call.correlation,
    )


@router.route(
    "PATCH",
    USER_PREFS,
    auth="api_key",
    tag="notifications",
    summary="Change a user's notification preferences (fields left out stay as they are)",
    body=PreferencesPatch,
    response=Preferences,
    errors=WRITE_ERRORS,
    permission="settings.manage",
)
async def set_user_preferences(call: Call) -> Preferences:
    return await call.rpc.call(
        SetPreferences(
            workspace_id=call.workspace_id,
            user_id=call.path["user_id"],
            patch=call.body,
            by="tenant",
        ),
        correlation=call.correlation,
    )


@router.route(
    "GET",
    WIDGET_PREFS,
    auth="session",
    tag="widget",
    summary="The session user's notification preferences",
    response=Preferences,
    errors=(401,),
)
async def get_my_preferences(call: Call) -> Preferences:
    assert isinstance(call.principal, SessionPrincipal)
    return await call.rpc.call(
        GetPreferences(workspace_id=call.workspace_id, user_id=call.principal.user_id),
        correlation=call.correlation,
    )


@router.route(
    "PATCH",
    WIDGET_PREFS,
    auth="session",
    tag="widget",
    summary="Change the session user's notification preferences",
    body=PreferencesPatch,
    response=Preferences,
    errors=(400, 401, 413, 415, 422),
)
async def set_my_preferences(call: Call) -> Preferences:
    assert isinstance(call.principal, SessionPrincipal)
    return await call.rpc.call(
        SetPreferences(
            workspace_id=call.workspace_id,
            user_id=call.principal.user_id,
            patch=call.body,
            by="user",
        ),
        correlation=call.correlation,
    )


@router.route(
    "GET",
    SETTINGS,
    auth="api_key",
    tag="notifications",
    summary="The workspace's notifier settings: delay, sender name, link, email templates",
    response=NotifierSettings,
    errors=(401,),
    permission="settings.manage",
)
async def get_settings(call: Call) -> NotifierSettings:
    return await call.rpc.call(
        GetSettings(workspace_id=call.workspace_id), correlation=call.correlation
    )


@router.route(
    "PATCH",
    SETTINGS,
    auth="api_key",
    tag="notifications",
    summary="Change the workspace's notifier settings and email templates",
    body=SettingsPatch,
    response=NotifierSettings,
    errors=WRITE_ERRORS,
    permission="settings.manage",
)
async def set_settings(call: Call) -> NotifierSettings:
    return await call.rpc.call(
        SetSettings(workspace_id=call.workspace_id, patch=call.body),
        correlation=call.correlation,
    )


@router.route(
    "POST",
    SETTINGS + "/preview",
    auth="api_key",
    tag="notifications",
    summary="Render an email template (given, or the workspace's) with sample messages",
    body=PreviewInput,
    response=Preview,
    errors=WRITE_ERRORS,
    permission="settings.manage",
)
async def preview(call: Call) -> Preview:
    return await call.rpc.call(
        PreviewTemplate(workspace_id=call.workspace_id, input=call.body),
        correlation=call.correlation,
    )


_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
</head><body style="font-family:sans-serif;max-width:32em;margin:3em auto">{body}</body></html>
"""


def _page(title: str, body: str) -> web.Response:
    return web.Response(
        text=_PAGE.format(title=html.escape(title), body=body),
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


@router.route(
    "GET",
    UNSUBSCRIBE,
    auth="public",
    tag="notifications",
    summary="The page behind a notification email's unsubscribe link (a button that POSTs)",
    query=UnsubscribeQuery,
    errors=(422,),
)
async def unsubscribe_page(call: Call) -> web.Response:
    token = html.escape(call.query.token, quote=True)
    form = (
        '<h1>Stop these emails?</h1><form method="post">'
        f'<input type="hidden" name="token" value="{token}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", form)


@router.route(
    "POST",
    UNSUBSCRIBE,
    auth="public",
    tag="notifications",
    summary="One-click unsubscribe (RFC 8058): email notifications off for the token's user",
    query=UnsubscribeQuery,
    errors=(404, 422),
)
async def unsubscribe(call: Call) -> web.Response:
    reply: Ok = await call.rpc.call(
        Unsubscribe(token=call.query.token), correlation=call.correlation
    )
    del reply
    return _page("Unsubscribed", "<h1>You will get no more of these emails.</h1>")


# -- push ------------------------------------------------------------------------------------
#
# A browser's subscription belongs to the user signed in where it was made: the widget's
# session user (``/api/widget/push…``) or the dashboard's staff member (``/dashboard/api/push…``,
# the cookie session; staff are users). Both pairs do the same through the helpers below.

DEVICES = "/api/v1/users/{user_id}/devices"
SUBSCRIPTIONS = "/api/widget/push/subscriptions"
STAFF_PUSH = "/dashboard/api/push"
PUSH_WORKER = Path(__file__).parent / "static" / "widget" / "v1" / "push-worker.js"


def _user_of(call: Call) -> str:
    principal = call.principal
    if isinstance(principal, SessionPrincipal | StaffPrincipal):
        return principal.user_id
    raise Unauthorized("Sign in first.")


async def _config(call: Call) -> PushConfig:
    return await call.rpc.call(
        GetPushConfig(workspace_id=call.workspace_id), correlation=call.correlation
    )


async def _subscriptions(call: Call) -> PushTargetList:
    return await call.rpc.call(
        ListPushTargets(workspace_id=call.workspace_id, user_id=_user_of(call), kinds=["webpush"]),
        correlation=call.correlation,
    )


async def _subscribe(call: Call) -> PushTarget:
    body: PushSubscriptionInput = call.body
    return await call.rpc.call(
        AddPushTarget(
            workspace_id=call.workspace_id,
            user_id=_user_of(call),
            kind="webpush",
            address=body.endpoint,
            p256dh=body.keys.p256dh,
            auth=body.keys.auth,
        ),
        correlation=call.correlation,
    )


async def _unsubscribe(call: Call) -> None:
    await call.rpc.call(
        RemovePushTarget(
            workspace_id=call.workspace_id,
            user_id=_user_of(call),
            target_id=call.path["subscription_id"],
        ),
        correlation=call.correlation,
    )


@router.route(
    "GET",
    "/api/widget/push",
    auth="session",
    tag="widget",
    summary="What a browser subscribes to web push with: the deployment's VAPID public key",
    response=PushConfig,
    errors=(401,),
)
async def push_config(call: Call) -> PushConfig:
    return await _config(call)


@router.route(
    "GET",
    SUBSCRIPTIONS,
    auth="session",
    tag="widget",
    summary="The session user's web push subscriptions",
    response=PushTargetList,
    errors=(401,),
)
async def my_subscriptions(call: Call) -> PushTargetList:
    return await _subscriptions(call)


@router.route(
    "POST",
    SUBSCRIPTIONS,
    auth="session",
    tag="widget",
    status=201,
    summary="Add a browser's push subscription (PushSubscription.toJSON()) for the user",
    body=PushSubscriptionInput,
    response=PushTarget,
    errors=(400, 401, 409, 413, 415, 422),
)
async def subscribe(call: Call) -> PushTarget:
    return await _subscribe(call)


@router.route(
    "DELETE",
    SUBSCRIPTIONS + "/{subscription_id}",
    auth="session",
    tag="widget",
    status=204,
    summary="Remove one of the user's push subscriptions",
    errors=(401, 404),
)
async def unsubscribe_push(call: Call) -> None:
    await _unsubscribe(call)


@router.route(
    "GET",
    STAFF_PUSH,
    auth="staff",
    tag="dashboard",
    summary="The deployment's VAPID public key, for the signed-in staff member's browser",
    response=PushConfig,
    errors=(401,),
)
async def staff_push_config(call: Call) -> PushConfig:
    return await _config(call)


@router.route(
    "GET",
    STAFF_PUSH + "/subscriptions",
    auth="staff",
    tag="dashboard",
    summary="The signed-in staff member's web push subscriptions",
    response=PushTargetList,
    errors=(401,),
)
async def staff_subscriptions(call: Call) -> PushTargetList:
    return await _subscriptions(call)


@router.route(
    "POST",
    STAFF_PUSH + "/subscriptions",
    auth="staff",
    tag="dashboard",
    status=201,
    summary="Add a browser's push subscription for the signed-in staff member",
    body=PushSubscriptionInput,
    response=PushTarget,
    errors=(400, 401, 403, 409, 413, 415, 422),
)
async def staff_subscribe(call: Call) -> PushTarget:
    return await _subscribe(call)


@router.route(
    "DELETE",
    STAFF_PUSH + "/subscriptions/{subscription_id}",
    auth="staff",
    tag="dashboard",
    status=204,
    summary="Remove one of the signed-in staff member's push subscriptions",
    errors=(401, 403, 404),
)
async def staff_unsubscribe(call: Call) -> None:
    await _unsubscribe(call)


@router.route(
    "GET",
    "/dashboard/push-worker.js",
    auth="public",
    tag="dashboard",
    summary="The dashboard's push service worker (the widget's push-worker.js), scope /dashboard/",
)
async def dashboard_push_worker(call: Call) -> web.Response:
    """The same file as ``/widget/v1/push-worker.js``, at a path whose scope is the
    dashboard's (a service worker's scope may not reach above its script's folder without
    ``Service-Worker-Allowed``; the header says so explicitly). Revalidated every time, so
    a deploy's new worker is installed at the next visit."""
    return web.Response(
        body=PUSH_WORKER.read_bytes(),
        content_type="text/javascript",
        charset="utf-8",
        headers={
            "Service-Worker-Allowed": "/dashboard/",
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.route(
    "POST",
    DEVICES,
    auth="api_key",
    tag="notifications",
    status=201,
    summary="Register a user's mobile device for push (FCM or APNs token)",
    body=DeviceInput,
    response=PushTarget,
    errors=(400, 401, 404, 409, 413, 415, 422),
    permission="settings.manage",
)
async def add_device(call: Call) -> PushTarget:
    body: DeviceInput = call.body
    return await call.rpc.call(
        AddPushTarget(
            workspace_id=call.workspace_id,
            user_id=call.path["user_id"],
            kind=body.platform,
            address=body.token,
        ),
        correlation=call.correlation,
    )


@router.route(
    "GET",
    DEVICES,
    auth="api_key",
    tag="notifications",
    summary="A user's registered mobile devices (tokens are not shown)",
    response=PushTargetList,
    errors=(401, 404),
    permission="conversations.read",
)
async def list_devices(call: Call) -> PushTargetList:
    return await call.rpc.call(
        ListPushTargets(
            workspace_id=call.workspace_id, user_id=call.path["user_id"], kinds=["fcm", "apns"]
        ),
        correlation=call.correlation,
    )


@router.route(
    "DELETE",
    DEVICES + "/{device_id}",
    auth="api_key",
    tag="notifications",
    status=204,
    summary="Remove a user's mobile device",
    errors=(401, 404),
    permission="settings.manage",
)
async def remove_device(call: Call) -> None:
    await call.rpc.call(
        RemovePushTarget(
            workspace_id=call.workspace_id,
            user_id=call.path["user_id"],
            target_id=call.path["device_id"],
        ),
        correlation=call.correlation,
    )


@router.route(
    "PUT",
    SETTINGS + "/push-credentials",
    auth="api_key",
    tag="notifications",
    summary="Set the workspace's FCM and APNs credentials (stored sealed, never shown again)",
    body=PushCredentialsInput,
    response=PushCredentialsReply,
    errors=WRITE_ERRORS,
    permission="settings.manage",
)
async def set_push_credentials(call: Call) -> PushCredentialsReply:
    return await call.rpc.call(
        SetPushCredentials(workspace_id=call.workspace_id, input=call.body),
        correlation=call.correlation,
    )


# -- staff invitations by email ------------------------------------------------------------


async def email_invitation(call: Call, principal: StaffPrincipal, made: InvitationWithToken,
                           link: str) -> str:  # fmt: skip
    """Ask the notifier to email the invitation; its answer once the request is stored:
    ``pending``, or ``off`` (no mail server). ``unavailable`` when it could not take it:
    the invitation stands, and the inviter passes the link on (they see it either way)."""
    invitation = made.invitation
    try:
        workspace, team = await asyncio.gather(
            call.rpc.call(
                GetWorkspace(workspace_id=principal.workspace_id), correlation=call.correlation
            ),
            call.rpc.call(
                ListStaff(workspace_id=principal.workspace_id), correlation=call.correlation
            ),
        )
        assert isinstance(workspace, Workspace) and isinstance(team, StaffList)
        inviter = next((m.name for m in team.data if m.user_id == principal.user_id), "")
        answer: InvitationMail = await call.rpc.call(
            MailInvitation(
                workspace_id=principal.workspace_id,
                invitation_id=invitation.id,
                email=invitation.email,
                role=invitation.role,
                expires_at=invitation.expires_at,
                link=link,
                workspace_name=workspace.name[:200],
                inviter_name=inviter[:200],
            ),
            correlation=call.correlation,
        )
    except ConfabError as exc:
        log.warning("invitation_not_emailed", invitation=invitation.id, error=exc.code)
        return "unavailable"
    return answer.status


@router.route(
    "GET",
    "/dashboard/api/invitations/{invitation_id}/email",
    auth="staff",
    permission=STAFF_MANAGE,
    tag="dashboard",
    summary="Whether an invitation's email went: pending, sent, refused, cancelled, failed",
    response=InvitationMail,
    errors=(401, 403, 404),
)
async def invitation_email(call: Call) -> InvitationMail:
    return await call.rpc.call(
        GetInvitationMail(workspace_id=call.workspace_id, invitation_id=call.path["invitation_id"]),
        correlation=call.correlation,
    )
