"""Wiring and start-up of the identity service.

Owns the ``IDENTITY`` stream and the ``identity`` read model; answers the
commands and queries of ``confab.contracts.identity`` (see ``handlers``).
"""

from __future__ import annotations

from confab.aggregate import Aggregates
from confab.bus import IDENTITY
from confab.contracts.identity import ListUsers
from confab.service import Service, run_service
from confab_identity.directory import Directory
from confab_identity.domain import State, evolve, initial
from confab_identity.handlers import Handlers
from confab_identity.projections import IdentityProjection
from confab_identity.settings import IdentitySettings
from confab_identity.store import Store


async def setup(service: Service) -> None:
    await service.declare(IDENTITY)
    keys = await service.key_ring()
    runner = await service.add_projection(IdentityProjection(keys=keys))
    assert service.engine is not None  # add_projection needs the database
    aggregates: Aggregates[State] = Aggregates(
        service.nc, service.js, IDENTITY.name, initial=initial, evolve=evolve, keys=keys
    )
    settings = service.settings
    read_wait = settings.read_wait_seconds if isinstance(settings, IdentitySettings) else 2.0
    handlers = Handlers(aggregates, Store(service.engine), runner, read_wait=read_wait)
    for request_type, handler in handlers.routes():
        await service.rpc.serve(request_type, handler)
    await service.rpc.serve(ListUsers, Directory(Store(service.engine)).list_users)


def main() -> None:
    run_service("identity", IdentitySettings, setup)


if __name__ == "__main__":
    main()
