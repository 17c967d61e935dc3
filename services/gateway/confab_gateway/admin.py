"""The admin API: platform operators create workspaces and rotate their API keys."""

from __future__ import annotations

import msgspec

from confab.contracts.base import Ok, PageLimit
from confab.contracts.identity import (
    ApiKey,
    CreateWorkspace,
    Id,
    IssueApiKey,
    ListWorkspaces,
    RevokeApiKey,
    WorkspaceInput,
    WorkspaceList,
    WorkspaceWithSecrets,
)
from confab_gateway.api import Call, Router

router = Router()


class Page(msgspec.Struct, kw_only=True, frozen=True):
    limit: PageLimit = 50
    after: Id | None = None  # the id of the last workspace of the previous page


@router.route(
    "POST",
    "/api/admin/workspaces",
    auth="admin",
    tag="admin",
    status=201,
    summary="Create a workspace; its API key and app secret are shown only in this reply",
    body=WorkspaceInput,
    response=WorkspaceWithSecrets,
    errors=(400, 401, 413, 415, 422),
)
async def create_workspace(call: Call) -> WorkspaceWithSecrets:
    return await call.rpc.call(CreateWorkspace(input=call.body), correlation=call.correlation)


@router.route(
    "GET",
    "/api/admin/workspaces",
    auth="admin",
    tag="admin",
    summary="List workspaces, oldest first",
    query=Page,
    response=WorkspaceList,
    errors=(401, 422),
)
async def list_workspaces(call: Call) -> WorkspaceList:
    return await call.rpc.call(ListWorkspaces(limit=call.query.limit, after=call.query.after))


@router.route(
    "POST",
    "/api/admin/workspaces/{workspace_id}/api-keys",
    auth="admin",
    tag="admin",
    status=201,
    summary="Issue another API key (for rotation); shown only in this reply",
    response=ApiKey,
    errors=(401, 404),
)
async def issue_api_key(call: Call) -> ApiKey:
    return await call.rpc.call(
        IssueApiKey(workspace_id=call.path["workspace_id"]), correlation=call.correlation
    )


@router.route(
    "DELETE",
    "/api/admin/workspaces/{workspace_id}/api-keys/{key_id}",
    auth="admin",
    tag="admin",
    status=204,
    summary="Revoke an API key; it stops working within a second",
    errors=(401, 404),
)
async def revoke_api_key(call: Call) -> None:
    _: Ok = await call.rpc.call(
        RevokeApiKey(workspace_id=call.path["workspace_id"], key_id=call.path["key_id"]),
        correlation=call.correlation,
    )
    # This gateway forgets it now; the others on the api_key.revoked event.
    call.request.app["auth"].forget(call.path["key_id"])
