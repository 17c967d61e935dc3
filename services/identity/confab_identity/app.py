"""Wiring and start-up of the identity service."""

from __future__ import annotations

from confab.bus import IDENTITY
from confab.service import Service, run_service
from confab_identity.settings import IdentitySettings


async def setup(service: Service) -> None:
    await service.declare(IDENTITY)


def main() -> None:
    run_service("identity", IdentitySettings, setup)


if __name__ == "__main__":
    main()
