"""The write side of webhooks: the tenant's endpoints, pings, and deliveries sent again.

Each endpoint command is the shell's three steps (``confab.shell``) on the endpoint
decider (``domain``): *prepare* finds the endpoint in the read model (a malformed,
unknown or foreign id is "not found" before anything else is looked at), checks a new
URL and where its host resolves (``confab.egress``), and makes up the new id, secret and
``now``; the shell runs the command against the endpoint's subject of ``WEBHOOKS`` with
optimistic concurrency; the reply waits until the endpoints read model shows the change
(bounded by ``read_wait_seconds``), so a ``GET`` right after reads it, and the intake of
every copy queues the events stored after it returned. A secret is in the replies of
its creation and of its rotation, read from the state the command left.

The sender disables an endpoint (a 410, or failing for days) through ``disable``. Two
commands append no event: a ping (one signed ``webhook.ping``, sent now, not retried)
and a retry (deliveries made due again in the deliveries table, which is not in the
log: see ``store``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from confab.aggregate import Executed
from confab.contracts.base import Ok
from confab.contracts.events.webhooks import subject
from confab.contracts.webhooks import (
    CreateWebhook,
    DeleteWebhook,
    Delivery,
    PingResult,
    PingWebhook,
    Retried,
    RetryDeliveries,
    RetryDelivery,
    RotateWebhookSecret,
    UpdateWebhook,
    Webhook,
    WebhookWithSecret,
)
from confab.egress import check_resolved, check_url
from confab.errors import InvalidRequest, NotFound
from confab.ids import new_id
from confab.logging import get_logger
from confab.projection import ProjectionRunner
from confab.rpc import CallContext
from confab.shell import CommandShell, Intent, Route
from confab_webhooks import domain
from confab_webhooks.delivery import Signer
from confab_webhooks.domain import EndpointState, State
from confab_webhooks.handlers import delivery_of, endpoint
from confab_webhooks.outbound import Outbound
from confab_webhooks.render import Renderer
from confab_webhooks.store import Store

log = get_logger("confab.webhooks")

Shell = CommandShell[domain.Command, State]


def utcnow() -> datetime:
    return datetime.now(UTC)


def with_secret(state: EndpointState) -> WebhookWithSecret:
    """The endpoint with its current secret and, after a rotation, when the one before it
    stops signing."""
    previous = state.secrets[1].expires_at if len(state.secrets) > 1 else None
    return WebhookWithSecret(
        **msgspec.structs.asdict(domain.public(state)),
        secret=state.secrets[0].value,
        previous_secret_expires_at=previous,
    )


def intent(
    workspace_id: str, endpoint_id: str, command: domain.Command, actor: str
) -> Intent[domain.Command]:
    """``command`` by ``actor`` on the endpoint's aggregate."""
    return Intent(subject(workspace_id, endpoint_id), command, workspace_id, actor)


class Commands:
    def __init__(
        self,
        shell: Shell,
        store: Store,
        endpoints: ProjectionRunner,
        renderer: Renderer,
        outbound: Outbound,
        *,
        allow_private: bool,
        read_wait: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.shell = shell
        self.store = store
        self.endpoints = endpoints
        self.renderer = renderer
        self.outbound = outbound
        self.signer = Signer()
        self.allow_private = allow_private
        self.read_wait = read_wait
        self.clock = clock

    def routes(self) -> list[Route]:
        handler = self.shell.handler
        return [
            (CreateWebhook, handler(self.create, self.shown_with_secret)),
            (UpdateWebhook, handler(self.update, self.updated)),
            (DeleteWebhook, handler(self.delete, self.settled)),
            (RotateWebhookSecret, handler(self.rotate, self.shown_with_secret)),
            (PingWebhook, self.ping),
            (RetryDelivery, self.retry_delivery),
            (RetryDeliveries, self.retry_deliveries),
        ]

    # -- replies ---------------------------------------------------------------------------

    async def settle(self, executed: Executed[State]) -> None:
        """Read-your-writes: wait (bounded) until the read model shows what was stored."""
        if executed.events and not await self.endpoints.wait_for(executed.version, self.read_wait):
            # The write is durable; a later read shows it.
            log.warning("read_model_behind", seq=executed.version)

    async def settled(self, _request: Any, executed: Executed[State]) -> Ok:
        await self.settle(executed)
        return Ok(seq=executed.version)

    async def updated(self, request: UpdateWebhook, executed: Executed[State]) -> Webhook:
        await self.settle(executed)
        return domain.public(domain.live(executed.state, request.workspace_id))

    async def shown_with_secret(
        self, request: CreateWebhook | RotateWebhookSecret, executed: Executed[State]
    ) -> WebhookWithSecret:
        await self.settle(executed)
        return with_secret(domain.live(executed.state, request.workspace_id))

    # -- endpoints -------------------------------------------------------------------------

    async def _check_url(self, url: str) -> None:
        host, port = check_url(url)
        await check_resolved(host, port, self.allow_private)

    async def create(self, cmd: CreateWebhook, _ctx: CallContext) -> Intent[domain.Command]:
        await self._check_url(cmd.input.url)
        existing = await self.store.count(cmd.workspace_id)
        command = domain.CreateWebhook(
            workspace_id=cmd.workspace_id,
            now=self.clock(),
            endpoint_id=new_id("wh"),
            given=cmd.input,
            secret=domain.new_secret(),
            existing=existing,
        )
        return intent(cmd.workspace_id, command.endpoint_id, command, cmd.actor)

    async def update(self, cmd: UpdateWebhook, _ctx: CallContext) -> Intent[domain.Command]:
        await endpoint(self.store, cmd.workspace_id, cmd.webhook_id)
        if isinstance(cmd.patch.url, str):
            await self._check_url(cmd.patch.url)
        command = domain.UpdateWebhook(
            workspace_id=cmd.workspace_id, now=self.clock(), patch=cmd.patch
        )
        return intent(cmd.workspace_id, cmd.webhook_id, command, cmd.actor)

    async def delete(self, cmd: DeleteWebhook, _ctx: CallContext) -> Intent[domain.Command]:
        await endpoint(self.store, cmd.workspace_id, cmd.webhook_id)
        command = domain.DeleteWebhook(workspace_id=cmd.workspace_id, now=self.clock())
        return intent(cmd.workspace_id, cmd.webhook_id, command, cmd.actor)

    async def rotate(self, cmd: RotateWebhookSecret, _ctx: CallContext) -> Intent[domain.Command]:
        await endpoint(self.store, cmd.workspace_id, cmd.webhook_id)
        command = domain.RotateWebhookSecret(
            workspace_id=cmd.workspace_id,
            now=self.clock(),
            secret=domain.new_secret(),
            overlap=timedelta(seconds=cmd.overlap_seconds),
        )
        return intent(cmd.workspace_id, cmd.webhook_id, command, cmd.actor)

    async def disable(self, workspace_id: str, endpoint_id: str, reason: str) -> None:
        """Called by the sender: a 410, or failing for days."""
        command = domain.DisableWebhook(workspace_id=workspace_id, now=self.clock(), reason=reason)
        await self.shell.run(intent(workspace_id, endpoint_id, command, "webhooks"))

    # -- pings and deliveries (no event) ---------------------------------------------------

    async def ping(self, cmd: PingWebhook, _ctx: CallContext) -> PingResult:
        """One signed ``webhook.ping``, sent now and not retried: what the endpoint said."""
        state = await endpoint(self.store, cmd.workspace_id, cmd.webhook_id)
        now = self.clock()
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
        await endpoint(self.store, cmd.workspace_id, cmd.webhook_id)
        if not cmd.delivery_id.isdigit() or len(cmd.delivery_id) > 18:
            raise NotFound("No delivery with that id.")
        rows = await self.store.requeue(cmd.webhook_id, delivery_id=int(cmd.delivery_id))
        if not rows:
            raise NotFound("No delivery with that id.")
        return delivery_of(rows[0])

    async def retry_deliveries(self, cmd: RetryDeliveries, _ctx: CallContext) -> Retried:
        await endpoint(self.store, cmd.workspace_id, cmd.webhook_id)
        given = cmd.input
        if given.until is not None and given.until <= given.since:
            raise InvalidRequest("until must be after since.", {"until": "must be after since"})
        rows = await self.store.requeue(
            cmd.webhook_id, since=given.since, until=given.until, status=given.status
        )
        return Retried(count=len(rows))
