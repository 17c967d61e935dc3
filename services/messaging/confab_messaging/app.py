"""Wiring and start-up of the messaging service.

Owns the ``CONVERSATIONS`` stream and the ``messaging`` read model (fed by
``CONVERSATIONS`` and by the user events of ``IDENTITY``); answers the
commands and queries of ``confab.contracts.messaging`` (see ``handlers``).
"""

from __future__ import annotations

from confab.aggregate import Aggregates
from confab.authority import Follower
from confab.bus import CONVERSATIONS, IDENTITY
from confab.eventlog import last_version
from confab.service import Service, run_service
from confab_messaging.domain import ConversationState, evolve, initial
from confab_messaging.exports import Exports
from confab_messaging.handlers import Handlers
from confab_messaging.projections import USER_SUBJECTS, ConversationsProjection, UsersProjection
from confab_messaging.settings import MessagingSettings
from confab_messaging.store import Store


async def setup(service: Service) -> None:
    await service.declare(CONVERSATIONS)
    settings = service.settings
    if not isinstance(settings, MessagingSettings):
        settings = MessagingSettings()  # defaults for everything messaging-specific
    batch = settings.projection_batch_size
    keys = await service.key_ring()
    users = await service.add_projection(UsersProjection(keys=keys), batch_size=batch)
    conversations = await service.add_projection(
        ConversationsProjection(keys=keys), batch_size=batch
    )
    assert service.engine is not None  # add_projection needs the database
    aggregates: Aggregates[ConversationState] = Aggregates(
        service.nc,
        service.js,
        CONVERSATIONS.name,
        initial=initial,
        evolve=evolve,
        cache_size=settings.aggregate_cache_size,
        keys=keys,
    )
    handlers = Handlers(
        service.nc,
        service.js,
        aggregates,
        Store(service.engine),
        conversations,
        users,
        read_wait=settings.read_wait_seconds,
    )
    follower = Follower(service.js, "messaging", handlers.standing.handle)
    await follower.start()
    service.on_stop(follower.stop)
    # Bans and erasures from before the follower's start are the read model's to know:
    # let it apply every user event stored by then.
    await users.wait_for(
        await last_version(service.js, IDENTITY.name, USER_SUBJECTS[0]), settings.read_wait_seconds
    )
    for request_type, handler in [*handlers.routes(), *Exports(handlers).routes()]:
        await service.rpc.serve(request_type, handler)


def main() -> None:
    run_service("messaging", MessagingSettings, setup)


if __name__ == "__main__":
    main()
