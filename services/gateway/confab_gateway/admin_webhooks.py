"""The admin API's webhook settings: Pusher webhooks of a workspace, kept by the fanout.

The fanout owns its configuration (a KV bucket no other service writes); these
endpoints set and read it through ``SetWebhooks`` / ``GetWebhooks``.
"""

from __future__ import annotations

from confab.contracts.fanout import GetWebhooks, SetWebhooks, WebhookConfig
from confab_gateway.api import Call, Router

router = Router()

PATH = "/api/admin/workspaces/{workspace_id}/webhooks"


@router.route(
    "PUT",
    PATH,
    auth="admin",
    tag="admin",
    summary="Set the workspace's Pusher webhooks (channel_occupied, channel_vacated, "
    "member_added, member_removed, client_event); an empty list turns them off",
    body=WebhookConfig,
    response=WebhookConfig,
    errors=(401, 404),
)
async def set_webhooks(call: Call) -> WebhookConfig:
    return await call.rpc.call(
        SetWebhooks(workspace_id=call.path["workspace_id"], config=call.body),
        correlation=call.correlation,
    )


@router.route(
    "GET",
    PATH,
    auth="admin",
    tag="admin",
    summary="The workspace's Pusher webhooks",
    response=WebhookConfig,
    errors=(401, 404),
)
async def get_webhooks(call: Call) -> WebhookConfig:
    return await call.rpc.call(GetWebhooks(workspace_id=call.path["workspace_id"]))
