"""Pusher channel authorization and user authentication for widgets (session token).

``POST /api/widget/broadcasting/auth`` is what pusher-js (``channelAuthorization``)
and Laravel Echo (``authEndpoint``) call before subscribing to a private or
presence channel, with form fields (or JSON) ``socket_id`` and ``channel_name``:

- ``private-conversation.{id}`` and ``presence-conversation.{id}``: participants
  who are not banned only (messaging decides); the presence ``channel_data`` is
  ``{"user_id": id, "user_info": {"name", "avatar_url"}, "session_id": id}``;
  the private one ``{"user_id": id, "session_id": id}`` (signed with the
  channel, as Pusher signs presence);
- ``private-user.{id}``: that user only, with the same private ``channel_data``;
- anything else, or someone else's: 403, which pusher-js turns into
  ``pusher:subscription_error``.

``POST /api/widget/broadcasting/user-auth`` signs ``pusher:signin`` for the
session's user, its ``user_data`` naming the session too. Signatures use the
workspace's app secret, asked of identity and kept for a minute.

Naming the user and the session in what is signed ties the socket to them: the
fanout checks every subscription against the conversation's membership as the
log has it now, and closes the socket when the session is revoked or the user
banned or erased (``confab_fanout.authority``).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import msgspec
from aiohttp import web

from confab import inbound, realtime
from confab.contracts.identity import (
    AppCredentials,
    GetAppCredentials,
    GetUser,
    SessionPrincipal,
    User,
)
from confab.contracts.messaging import CheckParticipant
from confab.errors import BadRequest, Forbidden, InvalidRequest, NotFound, UnsupportedMediaType
from confab.ids import is_valid_id
from confab.rpc import RpcClient
from confab_gateway.api import Call, Router, decode_json

router = Router()

SOCKET_ID = re.compile(r"^\d{1,20}\.\d{1,20}$")
CHANNEL_NAME = re.compile(r"^[-a-zA-Z0-9_=@,.;]{1,200}$")
SECRET_TTL = 60.0
ERRORS = (400, 403, 415, 422)


class ChannelAuthorization(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    auth: str
    channel_data: str | None = None  # who the channel is authorized for, as signed


class UserAuthentication(msgspec.Struct, kw_only=True, frozen=True):
    auth: str
    user_data: str


class Credentials:
    """Workspaces' app credentials, briefly cached (a rotated secret applies within a minute)."""

    def __init__(self, ttl: float = SECRET_TTL, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[AppCredentials, float]] = {}

    async def get(self, rpc: RpcClient, workspace_id: str) -> AppCredentials:
        now = time.monotonic()
        found = self._cache.get(workspace_id)
        if found is not None and found[1] > now:
            return found[0]
        creds: AppCredentials = await rpc.call(GetAppCredentials(workspace_id=workspace_id))
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[workspace_id] = (creds, now + self.ttl)
        return creds


credentials = Credentials()
_any_json: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


async def fields_of(request: web.Request) -> dict[str, str]:
    """The request's fields, from a form (what pusher-js sends) or a JSON object."""
    ctype = request.content_type
    charset = request.charset
    if charset is not None and not inbound.charset_ok(charset):
        raise UnsupportedMediaType("Send the fields in UTF-8 (charset=utf-8).")
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await request.post()
        except (ValueError, KeyError, AssertionError):  # e.g. no multipart boundary
            raise BadRequest("The form could not be read.") from None
        return {k: v for k, v in form.items() if isinstance(v, str)}
    if ctype == "application/json" or ctype.endswith("+json"):
        raw = await request.read()
        body = decode_json(raw, _any_json) if raw.strip() else None
        if not isinstance(body, dict):
            raise BadRequest("Send a JSON object with socket_id and channel_name.")
        return {k: str(v) for k, v in body.items() if isinstance(v, str | int)}
    raise UnsupportedMediaType(
        "Send the fields as application/x-www-form-urlencoded or application/json."
    )


def socket_id_of(fields: dict[str, str]) -> str:
    socket_id = fields.get("socket_id", "")
    if not SOCKET_ID.match(socket_id):
        raise InvalidRequest(
            "The socket_id is missing or malformed.", {"socket_id": "must look like 1234.5678"}
        )
    return socket_id


async def _profile(call: Call, user_id: str) -> dict[str, Any]:
    user: User = await call.rpc.call(GetUser(workspace_id=call.workspace_id, user_id=user_id))
    return {"name": user.name, "avatar_url": user.avatar_url}


async def _may_join(call: Call, channel: str, user_id: str) -> None:
    """Raise Forbidden unless the session's user may subscribe to ``channel``."""
    for prefix in (realtime.CONVERSATION_PREFIX, realtime.PRESENCE_PREFIX):
        if channel.startswith(prefix):
            conversation_id = channel[len(prefix) :]
            if not is_valid_id(conversation_id):
                break
            try:
                await call.rpc.call(
                    CheckParticipant(
                        actor=call.actor,
                        conversation_id=conversation_id,
                        min_seq=call.min_seq,
                        act=True,
                    )
                )
            except NotFound:
                raise Forbidden("Only the conversation's participants may join it.") from None
            return
    if channel == realtime.user_channel(user_id):
        return
    raise Forbidden(f"You may not subscribe to {channel}.")


@router.route(
    "POST",
    "/api/widget/broadcasting/auth",
    auth="session",
    tag="widget",
    summary="Pusher channel authorization (form or JSON socket_id, channel_name) "
    "for the private and presence channels the user may join",
    response=ChannelAuthorization,
    errors=ERRORS,
)
async def channel_auth(call: Call) -> ChannelAuthorization:
    assert isinstance(call.principal, SessionPrincipal)
    fields = await fields_of(call.request)
    socket_id = socket_id_of(fields)
    channel = fields.get("channel_name", "")
    if not CHANNEL_NAME.match(channel):
        raise InvalidRequest(
            "The channel_name is missing or malformed.", {"channel_name": "not a channel name"}
        )
    user_id = call.principal.user_id
    await _may_join(call, channel, user_id)
    creds = await credentials.get(call.rpc, call.workspace_id)
    # Signed along: who and which session the socket acts for (see the module's note).
    member: dict[str, Any] = {"user_id": user_id}
    if channel.startswith(realtime.PRESENCE_PREFIX):
        member["user_info"] = await _profile(call, user_id)
    member["session_id"] = call.principal.session_id
    channel_data = json.dumps(member, separators=(",", ":"), ensure_ascii=False)
    signature = realtime.channel_auth(
        creds.app_key, creds.app_secret, socket_id, channel, channel_data
    )
    return ChannelAuthorization(auth=signature, channel_data=channel_data)


@router.route(
    "POST",
    "/api/widget/broadcasting/user-auth",
    auth="session",
    tag="widget",
    summary="Pusher user authentication (pusher:signin) of the session's user",
    response=UserAuthentication,
    errors=ERRORS,
)
async def user_auth(call: Call) -> UserAuthentication:
    assert isinstance(call.principal, SessionPrincipal)
    socket_id = socket_id_of(await fields_of(call.request))
    user_id = call.principal.user_id
    creds = await credentials.get(call.rpc, call.workspace_id)
    user = {
        "id": user_id,
        "user_info": await _profile(call, user_id),
        "session_id": call.principal.session_id,
    }
    user_data = json.dumps(user, separators=(",", ":"), ensure_ascii=False)
    signature = realtime.user_auth(creds.app_key, creds.app_secret, socket_id, user_data)
    return UserAuthentication(auth=signature, user_data=user_data)
