"""The widget API (``/api/widget``, session token): what the embedded chat calls."""

from __future__ import annotations

import asyncio

import msgspec

from confab.contracts.identity import GetUser, GetWorkspace, User, Workspace
from confab_gateway.api import Call, Router

router = Router()


class Me(msgspec.Struct, kw_only=True, frozen=True):
    user: User
    workspace_id: str
    app_key: str
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
        websocket_url=call.request.app["fanout_ws_url"],
    )
