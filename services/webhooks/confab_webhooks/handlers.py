"""The webhooks service's RPC handlers: the tenant's endpoints, their deliveries, pings.

Commands are decided on the endpoint's state folded from the log (``domain``) and
appended with optimistic concurrency (``Aggregates.execute``); the reply waits until
the endpoints read model shows the change (bounded by ``read_wait_seconds``), so a
``GET`` right after reads it, and the intake of every copy queues the events stored
after it returned. Queries read the read model and the deliveries table; every lookup
is scoped to the caller's workspace (another workspace's endpoint is "not found").
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from confab.aggregate import Aggregates, Decision
from confab.contracts.base import Ok, Request
from confab.contracts.webhooks import (
    CreateWebhook,
    DeleteWebhook,
    Delivery,
    DeliveryList,
    GetWebhook,
    ListDeliveries,
    ListWebhooks,
    LogPosition,
    PingResult,
    PingWebhook,
    Retried,
    RetryDeliveries,
    RetryDelivery,
    RotateWebhookSecret,
    UpdateWebhook,
    Webhook,
    WebhookList,
    WebhookWithSecret,
    subject,
)
from confab.errors import InvalidRequest, NotFound
from confab.ids import is_valid_id, new_id
from confab.logging import get_logger
from confab.projection import ProjectionRunner
from confab.rpc import CallContext
from confab_webhooks import domain
from confab_webhooks.delivery import Outbound, Signer
from confab_webhooks.domain import EndpointState, State
from confab_webhooks.projections import state_of
from confab_webhooks.render import Renderer, message_id_of
from confab_webhooks.safety import check_resolved, check_url
from confab_webhooks.store import Store

log = get_logger("confab.webhooks")

Handler = Callable[[Any, CallContext], Awaitable[Any]]


def utcnow() -> datetime:
    return datetime.now(UTC)


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


class Handlers:
    def __init__(
        self,
        aggregates: Aggregates[State],
        store: Store,
        endpoints: ProjectionRunner,
        renderer: Renderer,
        outbound: Outbound,
        *,
        allow_private: bool,
        read_wait: float,
    ) -> None:
        self.aggregates = aggregates
        self.store = store
        self.endpoints = endpoints
        self.renderer = renderer
        self.outbound = outbound
        self.signer = Signer()
        self.allow_private = allow_private
        self.read_wait = read_wait

    def routes(self) -> list[tuple[type[Request], Handler]]:
        return [
            (CreateWebhook, self.create),
            (UpdateWebhook, self.update),
            (DeleteWebhook, self.delete),
            (RotateWebhookSecret, self.rotate),
            (PingWebhook, self.ping),
            (GetWebhook, self.get),
            (ListWebhooks, self.list_webhooks),
            (ListDeliveries, self.deliveries),
            (RetryDelivery, self.retry_delivery),
            (RetryDeliveries, self.retry_deliveries),
        ]

    # -- plumbing ----------------------------------------------------------------------------

    async def _execute(
        self,
        workspace_id: str,
        endpoint_id: str,
        decide: Callable[[State], Any],
        *,
        actor: str,
        ctx: CallContext,
    ) -> Decision[State]:
        decision = await self.aggregates.execute(
            subject(workspace_id, endpoint_id),
            decide,
            msg_id=new_id("evt"),
            workspace=workspace_id,
            actor=actor,
            correlation=ctx.correlation,
        )
        if decision.appended is not None and not await self.endpoints.wait_for(
            decision.version, self.read_wait
        ):
            log.warning("read_model_behind", seq=decision.version)
        return decision

    async def _check_url(self, url: str) -> None:
        host, port = check_url(url)
        await check_resolved(host, port, self.allow_private)

    async def _live(self, workspace_id: str, endpoint_id: str) -> EndpointState:
        if not is_valid_id(endpoint_id):
            raise NotFound(domain.NOT_FOUND)
        row = await self.store.endpoint(workspace_id, endpoint_id)
        if row is None:
            raise NotFound(domain.NOT_FOUND)
        return state_of(row)

    # -- commands ----------------------------------------------------------------------------

    async def create(self, cmd: CreateWebhook, ctx: CallContext) -> WebhookWithSecret:
        await self._check_url(cmd.input.url)
        existing = await self.store.count(cmd.workspace_id)
        endpoint_id, secret, now = new_id("wh"), domain.new_secret(), utcnow()
        decision = await self._execute(
            cmd.workspace_id,
            endpoint_id,
            lambda state: domain.decide_create(
                state,
                workspace_id=cmd.workspace_id,
                endpoint_id=endpoint_id,
                given=cmd.input,
                secret=secret,
                existing=existing,
                now=now,
            ),
            actor=cmd.actor,
            ctx=ctx,
        )
        state = domain.live(decision.state, cmd.workspace_id)
        return _with_secret(state, secret, None)

    async def update(self, cmd: UpdateWebhook, ctx: CallContext) -> Webhook:
        await self._live(cmd.workspace_id, cmd.webhook_id)
        if isinstance(cmd.patch.url, str):
            await self._check_url(cmd.patch.url)
        decision = await self._execute(
            cmd.workspace_id,
            cmd.webhook_id,
            lambda state: domain.decide_update(
                state, workspace_id=cmd.workspace_id, patch=cmd.patch, now=utcnow()
            ),
            actor=cmd.actor,
            ctx=ctx,
        )
        return domain.public(domain.live(decision.state, cmd.workspace_id))

    async def delete(self, cmd: DeleteWebhook, ctx: CallContext) -> Ok:
        await self._live(cmd.workspace_id, cmd.webhook_id)
        decision = await self._execute(
            cmd.workspace_id,
            cmd.webhook_id,
            lambda state: domain.decide_delete(state, workspace_id=cmd.workspace_id, now=utcnow()),
            actor=cmd.actor,
            ctx=ctx,
        )
        return Ok(seq=decision.version)

    async def rotate(self, cmd: RotateWebhookSecret, ctx: CallContext) -> WebhookWithSecret:
        await self._live(cmd.workspace_id, cmd.webhook_id)
        secret = domain.new_secret()
        decision = await self._execute(
            cmd.workspace_id,
            cmd.webhook_id,
            lambda state: domain.decide_rotate(
                state,
                workspace_id=cmd.workspace_id,
                secret=secret,
                overlap=timedelta(seconds=cmd.overlap_seconds),
                now=utcnow(),
            ),
            actor=cmd.actor,
            ctx=ctx,
        )
        state = domain.live(decision.state, cmd.workspace_id)
        return _with_secret(state, secret, state.secrets[1].expires_at)

    async def disable(self, workspace_id: str, endpoint_id: str, reason: str) -> None:
        """Called by the sender: a 410, or failing for days."""
        await self.aggregates.execute(
            subject(workspace_id, endpoint_id),
            lambda state: domain.decide_disable(
                state, workspace_id=workspace_id, reason=reason, now=utcnow()
            ),
            msg_id=new_id("evt"),
            workspace=workspace_id,
            actor="webhooks",
        )

    async def ping(self, cmd: PingWebhook, _ctx: CallContext) -> PingResult:
        """One signed ``webhook.ping``, sent now and not retried: what the endpoint said."""
        state = await self._live(cmd.workspace_id, cmd.webhook_id)
        now = utcnow()
        message_id = new_id("ping")
        body = self.renderer.ping(cmd.workspace_id, state.id, message_id, now)
        headers = self.signer.headers(
            message_id, body, domain.signing_secrets(state.secrets, now), now
        )
        started = time.perf_counter()
        answer = await self.outbound.post(state.url, body, headers)
        return PingResult(
            delivered=domain.outcome(answer.status) == domain.DELIVERED,
            message_id=message_id,
            status=answer.status,
            error=answer.error,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def retry_delivery(self, cmd: RetryDelivery, _ctx: CallContext) -> Delivery:
        await self._live(cmd.workspace_id, cmd.webhook_id)
        if not cmd.delivery_id.isdigit() or len(cmd.delivery_id) > 18:
            raise NotFound("No delivery with that id.")
        rows = await self.store.requeue(cmd.webhook_id, delivery_id=int(cmd.delivery_id))
        if not rows:
            raise NotFound("No delivery with that id.")
        return delivery_of(rows[0])

    async def retry_deliveries(self, cmd: RetryDeliveries, _ctx: CallContext) -> Retried:
        await self._live(cmd.workspace_id, cmd.webhook_id)
        given = cmd.input
        if given.until is not None and given.until <= given.since:
            raise InvalidRequest("until must be after since.", {"until": "must be after since"})
        rows = await self.store.requeue(
            cmd.webhook_id, since=given.since, until=given.until, status=given.status
        )
        return Retried(count=len(rows))

    # -- queries -----------------------------------------------------------------------------

    async def get(self, query: GetWebhook, _ctx: CallContext) -> Webhook:
        return domain.public(await self._live(query.workspace_id, query.webhook_id))

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
        await self._live(query.workspace_id, query.webhook_id)
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


def _with_secret(
    state: EndpointState, secret: str, previous_expires_at: datetime | None
) -> WebhookWithSecret:
    return WebhookWithSecret(
        **msgspec.structs.asdict(domain.public(state)),
        secret=secret,
        previous_secret_expires_at=previous_expires_at,
    )
