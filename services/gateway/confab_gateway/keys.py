"""The tenant's API keys, from the tenant API (``keys.manage``): list, create, revoke.

Rotating a key is creating the new one, moving the backend to it, then revoking
the old one; the dashboard's settings page does the same. A new key's secret is
in the creation reply only (identity keeps its hash). Revoking ends it at every
gateway before the reply (``confab.authority``), including the key that asked.
"""

from __future__ import annotations

from confab.contracts.identity import ApiKey, ApiKeyList, IssueApiKey, ListApiKeys, RevokeApiKey
from confab.staff import KEYS_MANAGE
from confab_gateway.api import Call, Router

router = Router()
KEYS = "/api/v1/api-keys"


@router.route(
    "GET",
    KEYS,
    auth="api_key",
    permission=KEYS_MANAGE,
    tag="keys",
    summary="The workspace's API keys (prefixes only), oldest first",
    response=ApiKeyList,
    errors=(401, 403),
)
async def list_keys(call: Call) -> ApiKeyList:
    return await call.rpc.call(ListApiKeys(workspace_id=call.workspace_id))


@router.route(
    "POST",
    KEYS,
    auth="api_key",
    permission=KEYS_MANAGE,
    tag="keys",
    status=201,
    summary="Create an API key; its secret is shown in this reply only",
    response=ApiKey,
    errors=(401, 403),
)
async def create_key(call: Call) -> ApiKey:
    actor = call.actor
    return await call.rpc.call(
        IssueApiKey(workspace_id=call.workspace_id, actor=actor.key_id or ""),
        correlation=call.correlation,
    )


@router.route(
    "DELETE",
    KEYS + "/{key_id}",
    auth="api_key",
    permission=KEYS_MANAGE,
    tag="keys",
    status=204,
    summary="Revoke an API key: refused everywhere before this returns",
    errors=(401, 403, 404),
)
async def revoke_key(call: Call) -> None:
    actor = call.actor
    # Not ``call.write``: that remembers CONVERSATIONS positions, this is IDENTITY's.
    await call.rpc.call(
        RevokeApiKey(
            workspace_id=call.workspace_id, key_id=call.path["key_id"], actor=actor.key_id or ""
        )
    )
