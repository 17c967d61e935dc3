"""Wiring and start-up of the webhooks service.

Owns the ``WEBHOOKS`` stream (tenants' endpoints, event-sourced: see
``confab.contracts.webhooks`` for why a stream of its own rather than identity's: an
endpoint's history is the tenant's configuration, written and read only here) and the
``webhooks`` schema (the endpoints read model and the deliveries). Follows
``CONVERSATIONS``, ``IDENTITY``, ``MEDIA`` and ``NOTIFIER`` through one partitioned intake each
(``projections.Intake``), sends what they queue (``delivery.Sender``), and answers the
commands (``commands``: the endpoint decider of ``domain`` run by the command shell,
pings, retries) and queries (``queries``) of ``confab.contracts.webhooks``. Bans do not
matter here; erasures do: an authority follower blanks an erased user's messages in the
views before identity's erasure returns.

The process lowers its own scheduling priority (``nice``, and its session's:
``confab.priority``): deliveries are asynchronous, so under load they wait for the CPU
the real-time path does not use.
"""

from __future__ import annotations

from confab import priority
from confab.aggregate import Aggregates
from confab.authority import USER_ERASED, Change, Follower
from confab.bus import CONVERSATIONS, IDENTITY, MEDIA, NOTIFIER, WEBHOOKS
from confab.eventlog import JetStreamLog
from confab.service import Service, StartupError, run_service
from confab.shell import CommandShell, routes
from confab_webhooks import domain
from confab_webhooks.commands import Commands
from confab_webhooks.delivery import Sender
from confab_webhooks.outbound import Outbound
from confab_webhooks.projections import SOURCES, EndpointsProjection, Intake
from confab_webhooks.queries import Queries
from confab_webhooks.render import Renderer
from confab_webhooks.settings import WebhooksSettings
from confab_webhooks.store import Store


async def setup(service: Service) -> None:
    settings = service.settings
    assert isinstance(settings, WebhooksSettings)
    try:
        domain.parse_schedule(settings.retry_schedule)
    except ValueError as exc:
        raise StartupError(f"CONFAB_WEBHOOKS_RETRY_SCHEDULE: {exc}") from None
    if settings.nice:
        await priority.lower(settings.nice)
    # The streams it follows are declared too (idempotent): start-up order does not matter.
    await service.declare(WEBHOOKS, CONVERSATIONS, IDENTITY, MEDIA, NOTIFIER)
    assert service.engine is not None
    store = Store(service.engine)
    keys = await service.key_ring()
    renderer = Renderer(service.nc, keys, views=settings.views)
    await renderer.start()
    service.on_stop(renderer.stop)
    outbound = Outbound(settings)
    await outbound.start()
    service.on_stop(outbound.stop)
    log = JetStreamLog(service.nc, service.js, WEBHOOKS.name)
    endpoints = await service.add_projection(EndpointsProjection())
    commands = Commands(
        CommandShell(Aggregates(log, domain.DECIDER)),
        store,
        endpoints,
        renderer,
        outbound,
        allow_private=settings.allow_private,
        read_wait=settings.read_wait_seconds,
    )
    sender = Sender(store, renderer, outbound, settings, commands.disable)

    def on_change(change: Change) -> None:
        if change.type == USER_ERASED and change.kind == "user":
            renderer.erase(change.workspace_id, change.entity_id)

    follower = Follower(service.js, "webhooks", on_change)
    await follower.start()
    service.on_stop(follower.stop)
    intakes = {}
    for source in SOURCES:
        take = renderer.take if source == "conversations" else None
        intake = Intake(
            source,
            settings.partitions,
            sender.offer,
            take,
            first=sender,
            first_wait=settings.first_attempt_wait_seconds,
        )
        # Nobody waits on an intake's checkpoint: a pause after a short batch gathers the
        # next one, so a busy stream costs a transaction per batch, not per event.
        intakes[source] = await service.add_projection(
            intake, batch_size=500, linger=settings.intake_linger_seconds
        )
    sender.follow(intakes, endpoints)
    await sender.start()
    service.on_stop(sender.stop)
    service.checks["deliveries"] = sender.health
    for request_type, handler in routes(commands, Queries(store)):
        await service.rpc.serve(request_type, handler)


def main() -> None:
    run_service("webhooks", WebhooksSettings, setup)


if __name__ == "__main__":
    main()
