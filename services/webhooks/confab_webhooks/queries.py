"""The read side of webhooks: endpoints as the read model has them, and their deliveries.

Reads only ``webhooks.endpoints`` and ``webhooks.deliveries`` (``store``), scoped to the
caller's workspace. A command's reply has waited for the read model to show its change,
so a ``GET`` right after it reads it.
"""

from __future__ import annotations

from confab.contracts.webhooks import (
    DeliveryList,
    GetWebhook,
    ListDeliveries,
    ListWebhooks,
    Webhook,
    WebhookList,
)
from confab.ids import is_valid_id
from confab.rpc import CallContext
from confab.shell import Route
from confab_webhooks import domain
from confab_webhooks.handlers import delivery_of, endpoint
from confab_webhooks.projections import state_of
from confab_webhooks.store import Store


class Queries:
    def __init__(self, store: Store) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        return [
            (GetWebhook, self.get),
            (ListWebhooks, self.list_webhooks),
            (ListDeliveries, self.deliveries),
        ]

    async def get(self, query: GetWebhook, _ctx: CallContext) -> Webhook:
        return domain.public(await endpoint(self.store, query.workspace_id, query.webhook_id))

    async def list_webhooks(self, query: ListWebhooks, _ctx: CallContext) -> WebhookList:
        after = query.cursor if query.cursor and is_valid_id(query.cursor) else None
        rows = await self.store.endpoints(query.workspace_id, after=after, limit=query.limit + 1)
        page = rows[: query.limit]
        more = len(rows) > query.limit
        return WebhookList(
            data=[domain.public(state_of(r)) for r in page],
            has_more=more,
            next_cursor=page[-1]["id"] if more and page else None,
        )

    async def deliveries(self, query: ListDeliveries, _ctx: CallContext) -> DeliveryList:
        await endpoint(self.store, query.workspace_id, query.webhook_id)
        before = int(query.cursor) if query.cursor else None
        rows = await self.store.deliveries(
            query.webhook_id, status=query.status, before=before, limit=query.limit + 1
        )
        page = rows[: query.limit]
        more = len(rows) > query.limit
        return DeliveryList(
            data=[delivery_of(r) for r in page],
            has_more=more,
            next_cursor=str(page[-1]["id"]) if more and page else None,
        )
