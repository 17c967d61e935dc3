"""What webhooks' two sides share: an endpoint as the read model has it, and a delivery's
public form.

``commands`` (the write side: the endpoint decider run by the command shell, pings and
retries) and ``queries`` (the read side: the endpoints read model and the deliveries)
each list their handlers; ``app`` serves both (``confab.shell.routes``). Every lookup is
scoped to the caller's workspace: another workspace's endpoint is "not found".
"""

from __future__ import annotations

from typing import Any

from confab.contracts.webhooks import Delivery, LogPosition
from confab.errors import NotFound
from confab.ids import is_valid_id
from confab_webhooks import domain
from confab_webhooks.domain import EndpointState
from confab_webhooks.projections import state_of
from confab_webhooks.render import message_id_of
from confab_webhooks.store import Store


async def endpoint(store: Store, workspace_id: str, endpoint_id: str) -> EndpointState:
    """The workspace's endpoint in the read model; NotFound if the id is malformed, unknown,
    another workspace's or deleted."""
    if not is_valid_id(endpoint_id):
        raise NotFound(domain.NOT_FOUND)
    row = await store.endpoint(workspace_id, endpoint_id)
    if row is None:
        raise NotFound(domain.NOT_FOUND)
    return state_of(row)


def delivery_of(row: dict[str, Any]) -> Delivery:
    return Delivery(
        id=str(row["id"]),
        webhook_id=row["endpoint_id"],
        message_id=message_id_of(row["stream"], row["seq"]),
        event_type=row["event_type"],
        status=row["status"],
        attempts=row["attempts"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        log=LogPosition(stream=row["stream"], seq=row["seq"]),
        conversation_id=row["conversation_id"],
        event_seq=row["event_seq"],
        created_at=row["stored_at"],
        last_attempt_at=row["last_attempt_at"],
        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
        delivered_at=row["delivered_at"] if row["status"] == "delivered" else None,
    )
