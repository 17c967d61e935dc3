"""Wiring and start-up of the identity service.

Owns the ``IDENTITY`` stream and the ``identity`` read model; answers the
commands (``commands``: one decider of ``domain`` per aggregate kind, each
run by its command shell) and queries (``queries``, and the tenant's user
directory, ``directory``) of ``confab.contracts.identity``.
"""

from __future__ import annotations

from typing import Any

from confab.aggregate import Aggregates
from confab.bus import IDENTITY
from confab.contracts.identity import ListUsers, SetUserBan
from confab.decider import Decider
from confab.eventlog import JetStreamLog
from confab.personal import KeyRing
from confab.service import Service, run_service
from confab.shell import CommandShell, routes
from confab_identity import domain, support
from confab_identity.commands import Commands, Shells
from confab_identity.directory import Directory
from confab_identity.projections import IdentityProjection
from confab_identity.queries import Queries
from confab_identity.settings import IdentitySettings
from confab_identity.staff import StaffCommands, StaffShells
from confab_identity.store import Store
from confab_identity.support import SupportSetupProjection, SupportSide
from confab_identity.unbans import Unbans


def shells(log: JetStreamLog, keys: KeyRing | None) -> Shells:
    def shell(decider: Decider[Any, Any]) -> CommandShell[Any, Any]:
        return CommandShell(Aggregates(log, decider, keys=keys))

    return Shells(
        workspaces=shell(domain.WORKSPACE),
        api_keys=shell(domain.API_KEY),
        users=shell(domain.USER),
        sessions=shell(domain.SESSION),
    )


async def setup(service: Service) -> None:
    await service.declare(IDENTITY)
    keys = await service.key_ring()
    runner = await service.add_projection(IdentityProjection(keys=keys))
    assert service.engine is not None  # add_projection needs the database
    settings = service.settings
    read_wait = settings.read_wait_seconds if isinstance(settings, IdentitySettings) else 2.0
    log = JetStreamLog(service.nc, service.js, IDENTITY.name)
    store = Store(service.engine)
    made = shells(log, keys)
    commands = Commands(made, service.js, store, runner, read_wait=read_wait)
    staff = StaffCommands(
        StaffShells(
            staff=CommandShell(Aggregates(log, domain.STAFF, keys=keys)),
            invitations=CommandShell(Aggregates(log, domain.INVITATION, keys=keys)),
            users=made.users,
            sessions=made.sessions,
            workspaces=made.workspaces,
        ),
        service.js,
        store,
        runner,
        read_wait=read_wait,
    )
    queries = Queries(store, runner, log, read_wait=read_wait)
    support_runner = await service.add_projection(SupportSetupProjection())
    support_shell = CommandShell(Aggregates(log, support.DECIDER, keys=keys))
    setup_side = SupportSide(support_shell, store, support_runner, read_wait=read_wait)
    handlers = routes(commands, staff, queries, setup_side)
    for request_type, handler in handlers:
        await service.rpc.serve(request_type, handler)
    await service.rpc.serve(ListUsers, Directory(store).list_users)
    interval = settings.unban_interval_seconds if isinstance(settings, IdentitySettings) else 1.0
    set_ban = next(h for t, h in handlers if t is SetUserBan)
    unbans = Unbans(service.engine, set_ban, interval=interval)
    unbans.start()
    service.on_stop(unbans.stop)


def main() -> None:
    run_service("identity", IdentitySettings, setup)


if __name__ == "__main__":
    main()
