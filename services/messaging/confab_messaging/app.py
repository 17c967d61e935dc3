"""Wiring and start-up of the messaging service.

Owns the ``CONVERSATIONS`` stream and the ``messaging`` read model (fed by
``CONVERSATIONS`` and by the user events of ``IDENTITY``); answers the
commands (``commands``: the conversation decider of ``domain`` run by the
command shell) and queries (``queries``: the read model; ``exports``: a user's
data for the tenant) of ``confab.contracts.messaging``. Both sides share the
look-ups of ``handlers``.
"""

from __future__ import annotations

import functools

from confab.aggregate import Aggregates
from confab.authority import Follower, fence
from confab.bus import CONVERSATIONS, IDENTITY
from confab.eventlog import JetStreamLog, last_version
from confab.rpc import RpcClient
from confab.service import Service, run_service
from confab.shell import CommandShell, routes
from confab_messaging.commands import Commands
from confab_messaging.enforcement import Enforcement
from confab_messaging.exports import Exports
from confab_messaging.handlers import Lookups
from confab_messaging.projections import USER_SUBJECTS, ConversationsProjection, UsersProjection
from confab_messaging.queries import Queries
from confab_messaging.reports import Reports
from confab_messaging.search import Searcher, SearchProjection, SearchQueries
from confab_messaging.settings import MessagingSettings
from confab_messaging.store import Store
from confab_messaging.support_domain import DECIDER
from confab_messaging.support_handlers import Support
from confab_messaging.support_projection import SupportProjection
from confab_messaging.support_store import SupportStore
from confab_messaging.workspace import SETTINGS_WATCH, WorkspaceSettings


async def setup(service: Service) -> None:
    await service.declare(CONVERSATIONS)
    settings = service.settings
    if not isinstance(settings, MessagingSettings):
        settings = MessagingSettings()  # defaults for everything messaging-specific
    add = functools.partial(
        service.add_projection,
        batch_size=settings.projection_batch_size,
        linger=settings.projection_linger_seconds,
    )
    keys = await service.key_ring()
    users = await add(UsersProjection(keys=keys))
    conversations = await add(ConversationsProjection(keys=keys))
    support = await add(SupportProjection(keys=keys))
    search = await add(SearchProjection(keys=keys))
    assert service.engine is not None  # add_projection needs the database
    log = JetStreamLog(service.nc, service.js, CONVERSATIONS.name)
    aggregates = Aggregates(log, DECIDER, cache_size=settings.aggregate_cache_size, keys=keys)
    store = Store(service.engine)
    lookups = Lookups(
        service.js,
        store,
        conversations,
        users,
        RpcClient(service.nc),
        read_wait=settings.read_wait_seconds,
        search=search,
    )
    queries = Queries(store, lookups, log)
    searcher = Searcher(service.engine)
    settings_ = WorkspaceSettings(
        log,
        settle=lookups.settle,
        fence=lambda seq: fence(
            service.js, seq, timeout=settings.read_wait_seconds, watch=SETTINGS_WATCH
        ),
    )
    # Before serving: a post answers from the settings this follower keeps current.
    settings_follower = Follower(
        service.js, "messaging-settings", settings_.changed, SETTINGS_WATCH
    )
    await settings_follower.start()
    service.on_stop(settings_follower.stop)
    shell = CommandShell(aggregates)
    commands = Commands(
        service.nc,
        shell,
        lookups,
        queries.existing,
        policy=settings_.policy,
        previews_on=settings_.previews_on,
    )
    enforcement = Enforcement(shell, lookups, commands.clock)
    follower = Follower(service.js, "messaging", lookups.standing.handle)
    await follower.start()
    service.on_stop(follower.stop)
    # Bans and erasures from before the follower's start are the read model's to know:
    # let it apply every user event stored by then.
    await users.wait_for(
        await last_version(service.js, IDENTITY.name, USER_SUBJECTS[0]), settings.read_wait_seconds
    )
    sides = (commands, queries, Exports(queries), settings_)
    sides += (SearchQueries(queries, searcher), enforcement)
    sides += (Support(commands, queries, SupportStore(service.engine), support),)
    sides += (Reports(service.engine),)
    for request_type, handler in routes(*sides):
        await service.rpc.serve(request_type, handler)


def main() -> None:
    run_service("messaging", MessagingSettings, setup)


if __name__ == "__main__":
    main()
