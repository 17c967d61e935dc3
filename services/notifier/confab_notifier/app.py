"""Wiring and start-up of the notifier: who is told about unread messages, and how.

Owns the ``NOTIFIER`` stream (users' preferences and push targets, workspaces' settings,
templates and push credentials, email refusals, and its decisions, ``notification.due``:
``confab.contracts.events.notifier``), the ``notifier`` schema and the KV bucket
``NOTIFIER`` (the deployment's keys: ``keys``). Follows ``CONVERSATIONS`` (partitioned:
copies share the conversations), ``IDENTITY`` and its own stream into its tables
(``projections``); decides what is due in the partitions it owns (``engine``), and
sends what it decided (``delivery``: ``notification.due``, email, and push through
``push``), and emails staff invitations (``invitations``). Presence comes from the
fanout nodes' keys in the ``presence`` bucket (``presence``). Answers the commands and
queries of ``confab.contracts.notifier`` (``commands``, ``invitations``).
"""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa

from confab import priority
from confab.bus import CONVERSATIONS, IDENTITY, NOTIFIER
from confab.service import Service, run_service
from confab_notifier import templates
from confab_notifier.commands import Commands
from confab_notifier.delivery import Sender
from confab_notifier.engine import Engine, utcnow
from confab_notifier.invitations import (
    InvitationMailProjection,
    Invitations,
    InvitationStateProjection,
)
from confab_notifier.keys import Sealer, bucket, deployment_secret
from confab_notifier.mail import Mailer, Tokens
from confab_notifier.presence import Presence
from confab_notifier.projections import (
    ConversationsProjection,
    IdentityProjection,
    NotifierProjection,
)
from confab_notifier.push import VAPID_KEY, Pusher, WebPush, new_vapid_pem
from confab_notifier.settings import NotifierSettings
from confab_notifier.store import TABLES


async def setup(service: Service) -> None:
    settings = service.settings
    assert isinstance(settings, NotifierSettings)
    if settings.nice:
        await priority.lower(settings.nice)
    await service.declare(NOTIFIER, CONVERSATIONS, IDENTITY)
    assert service.engine is not None
    keys = await service.key_ring()
    kv = await bucket(service.js, settings.stream_replicas)
    tokens = await Tokens.open(kv)
    sealer = await Sealer.open(kv)
    web = WebPush(
        await deployment_secret(kv, VAPID_KEY, new_vapid_pem()),
        f"mailto:{settings.smtp_from}",
        allow_private=settings.allow_private,
    )
    engine_db = service.engine

    async def credentials(workspace_id: str) -> dict[str, Any] | None:
        c = TABLES.credentials
        async with engine_db.connect() as conn:
            row = (
                await conn.execute(sa.select(c.c.sealed).where(c.c.workspace_id == workspace_id))
            ).first()
        plain = sealer.open_sealed(row.sealed) if row is not None else None
        if plain is None:
            return None
        return {**msgspec.json.decode(plain), "version": row.sealed}

    pusher = Pusher(
        web,
        credentials,
        fcm_url=settings.fcm_url,
        fcm_token_url=settings.fcm_token_url,
        apns_url=settings.apns_url,
    )
    service.on_stop(pusher.close)
    renderer = templates.Renderer()
    await renderer.start()
    service.on_stop(renderer.close)
    presence = Presence(service.js)
    await presence.start()
    service.on_stop(presence.stop)
    prefs = await service.add_projection(NotifierProjection(), batch_size=500)
    users = await service.add_projection(IdentityProjection(), batch_size=500)
    # Nothing waits on this checkpoint (a notification is due seconds later at the
    # earliest): a pause of 250 ms after a short batch makes a busy stream's batches larger
    # (a transaction costs about as much as the events in it, up to a few dozen).
    conversations = await service.add_projection(
        ConversationsProjection(
            settings.partitions, settings.default_delay_seconds, settings.mention_delay_seconds
        ),
        batch_size=500,
        linger=0.25,
    )
    sender = Sender(
        service.engine,
        service.js,
        keys,
        tokens,
        Mailer(settings),
        renderer,
        pusher,
        settings,
        owned=lambda: conversations.owned,
        clock=utcnow,
    )
    engine = Engine(
        service.engine,
        lambda: conversations.owned,
        presence,
        offer=sender.offer,
        max_age=settings.max_age_seconds,
        batch=settings.batch,
        tick_seconds=settings.tick_seconds,
    )
    await sender.start()
    service.on_stop(sender.stop)
    await engine.start()
    service.on_stop(engine.stop)
    commands = Commands(
        service.engine,
        service.js,
        tokens,
        prefs,
        users,
        default_delay=settings.default_delay_seconds,
        read_wait=settings.read_wait_seconds,
        vapid_public_key=web.public_key,
        sealer=sealer,
        renderer=renderer,
        allow_private=settings.allow_private,
    )
    invitations = Invitations(
        service.engine, service.js, sealer, Mailer(settings), settings, clock=utcnow
    )
    await service.add_projection(InvitationStateProjection())
    invitations.runner = await service.add_projection(InvitationMailProjection(invitations.wake))
    await invitations.start()
    service.on_stop(invitations.stop)
    for request_type, handler in [*commands.routes(), *invitations.routes()]:
        await service.rpc.serve(request_type, handler)


def main() -> None:
    run_service("notifier", NotifierSettings, setup)


if __name__ == "__main__":
    main()
