"""The consumer backend API for webhooks (``/api/v1/webhooks``, ``X-API-Key``).

A tenant's endpoints receive the workspace's domain events, signed the Standard
Webhooks way (``docs/webhooks.md``). The webhooks service owns them; every route is
one request to it, scoped to the caller's workspace. A signing secret is in the
answer only when it is made (creation, rotation).
"""

from __future__ import annotations

from confab.contracts.webhooks import (
    CreateWebhook,
    DeleteWebhook,
    Delivery,
    DeliveryList,
    DeliveryQuery,
    GetWebhook,
    ListDeliveries,
    ListWebhooks,
    PingResult,
    PingWebhook,
    Retried,
    RetryDeliveries,
    RetryDelivery,
    RetryRangeInput,
    RotateInput,
    RotateWebhookSecret,
    UpdateWebhook,
    Webhook,
    WebhookInput,
    WebhookList,
    WebhookListQuery,
    WebhookPatch,
    WebhookWithSecret,
)
from confab.staff import WEBHOOKS_MANAGE
from confab_gateway.api import Call, Router

router = Router()

PATH = "/api/v1/webhooks"
ONE = PATH + "/{webhook_id}"
WRITE_ERRORS = (400, 401, 404, 409, 413, 415, 422)


def _actor(call: Call) -> str:
    return call.actor.key_id or ""


@router.route(
    "POST",
    PATH,
    auth="api_key",
    permission=WEBHOOKS_MANAGE,
    tag="webhooks",
    status=201,
    summary="Add an endpoint for the workspace's events; its signing secret is shown only here",
    body=WebhookInput,
    response=WebhookWithSecret,
    errors=WRITE_ERRORS,
)
async def create_webhook(call: Call) -> WebhookWithSecret:
    return await call.rpc.call(
        CreateWebhook(workspace_id=call.workspace_id, input=call.body, actor=_actor(call)),
        correlation=call.correlation,
    )


@router.route(
    "GET",
    PATH,
    auth="api_key",
    permission=WEBHOOKS_MANAGE,
    tag="webhooks",
    summary="The workspace's webhook endpoints, oldest first",
    query=WebhookListQuery,
    response=WebhookList,
    errors=(401, 422),
)
async def list_webhooks(call: Call) -> WebhookList:
    q = call.query
    return await call.rpc.call(
        ListWebhooks(workspace_id=call.workspace_id, limit=q.limit, cursor=q.cursor)
    )


@router.route(
    "GET",
    ONE,
    auth="api_key",
    permission=WEBHOOKS_MANAGE,
    tag="webhooks",
    summary="One webhook endpoint",
    response=Webhook,
    errors=(401, 404),
)
async def get_webhook(call: Call) -> Webhook:
    return await call.rpc.call(
        GetWebhook(workspace_id=call.workspace_id, webhook_id=call.path["webhook_id"])
    )


@router.route(
    "PATCH",
    ONE,
    auth="api_key",
    permission=WEBHOOKS_MANAGE,
    tag="webhooks",
    summary="Change an endpoint's URL, event types, description, or enable it again",
    body=WebhookPatch,
    response=Webhook,
    errors=WRITE_ERRORS,
)
async def update_webhook(call: Call) -> Webhook:
    return await call.rpc.call(
        UpdateWebhook(
            workspace_id=call.workspace_id,
            webhook_id=call.path["webhook_id"],
            patch=call.body,
            actor=_actor(call),
        ),
        correlation=call.correlation,
    )


@router.route(
    "DELETE",
    ONE,
    auth="api_key",
    permission=WEBHOOKS_MANAGE,
    tag="webhooks",
    status=204,
    summary="Remove an endpoint; its pending deliveries are cancelled",
    errors=(401, 404),
)
async def delete_webhook(call: Call) -> None:
    await call.rpc.call(
        DeleteWebhook(
            workspace_id=call.workspace_id,
            webhook_id=call.path["webhook_id"],
            actor=_actor(call),
        ),
        correlation=call.correlation,
    )


@router.route(
    "POST",
    ONE + "/rotate-secret",
    auth="api_key",
    permission=WEBHOOKS_MANAGE,
    tag="webhooks",
    summary="A new signing secret (shown only here); the old one also signs for "
    "overlap_seconds (default 24 h)",
    body=RotateInput,
    response=WebhookWithSecret,
    errors=WRITE_ERRORS,
)
async def rotate_secret(call: Call) -> WebhookWithSecret:
    return await call.rpc.call(
        RotateWebhookSecret(
            workspace_id=call.workspace_id,
            webhook_id=call.path["webhook_id"],
            overlap_seconds=call.body.overlap_seconds,
            actor=_actor(call),
        ),
        correlation=call.correlation,
    )


@router.route(
    "POST",
    ONE + "/test",
    auth="api_key",
    permission=WEBHOOKS_MANAGE,
    tag="webhooks",
    summary="Send a signed webhook.ping to the endpoint now (once) and say what it answered",
    response=PingResult,
    errors=(401, 404),
)
async def ping_webhook(call: Call) -> PingResult:
    return await call.rpc.call(
        PingWebhook(workspace_id=call.workspace_id, webhook_id=call.path["webhook_id"]),
        correlation=call.correlation,
    )


@router.route(
    "GET",
    ONE + "/deliveries",
    auth="api_key",
    permission=WEBHOOKS_MANAGE,
    tag="webhooks",
    summary="The endpoint's deliveries, newest first: status, attempts, last error",
    query=DeliveryQuery,
    response=DeliveryList,
    errors=(401, 404, 422),
)
async def list_deliveries(call: Call) -> DeliveryList:
    q = call.query
    return await call.rpc.call(
        ListDeliveries(
            workspace_id=call.workspace_id,
            webhook_id=call.path["webhook_id"],
            status=q.status,
            limit=q.limit,
            cursor=q.cursor,
        )
    )


@router.route(
    "POST",
    ONE + "/deliveries/{delivery_id}/retry",
    auth="api_key",
    permission=WEBHOOKS_MANAGE,
    tag="webhooks",
    status=202,
    summary="Send a delivery again, with a fresh retry schedule",
    response=Delivery,
    errors=(401, 404),
)
async def retry_delivery(call: Call) -> Delivery:
    return await call.rpc.call(
        RetryDelivery(
            workspace_id=call.workspace_id,
            webhook_id=call.path["webhook_id"],
            delivery_id=call.path["delivery_id"],
        ),
        correlation=call.correlation,
    )


@router.route(
    "POST",
    ONE + "/deliveries/retry",
    auth="api_key",
    permission=WEBHOOKS_MANAGE,
    tag="webhooks",
    status=202,
    summary="Send again every failed (or pending) delivery of events stored in [since, until)",
    body=RetryRangeInput,
    response=Retried,
    errors=WRITE_ERRORS,
)
async def retry_deliveries(call: Call) -> Retried:
    return await call.rpc.call(
        RetryDeliveries(
            workspace_id=call.workspace_id, webhook_id=call.path["webhook_id"], input=call.body
        ),
        correlation=call.correlation,
    )
