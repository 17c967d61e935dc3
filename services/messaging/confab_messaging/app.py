"""Wiring and start-up of the messaging service."""

from __future__ import annotations

from confab.bus import CONVERSATIONS
from confab.service import Service, run_service
from confab_messaging.settings import MessagingSettings


async def setup(service: Service) -> None:
    await service.declare(CONVERSATIONS)


def main() -> None:
    run_service("messaging", MessagingSettings, setup)


if __name__ == "__main__":
    main()
