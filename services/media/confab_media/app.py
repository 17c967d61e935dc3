"""Wiring and start-up of the media service."""

from __future__ import annotations

from confab.bus import MEDIA
from confab.service import Service, StartupError, run_service
from confab_media.settings import MediaSettings
from confab_media.storage import Storage


async def setup(service: Service) -> None:
    assert isinstance(service.settings, MediaSettings)
    await service.declare(MEDIA)
    storage = Storage(service.settings)
    try:
        await storage.ensure_bucket()
    except Exception as exc:
        raise StartupError(f"cannot use S3 at {service.settings.s3_endpoint}: {exc}") from None
    service.checks["s3"] = storage.check


def main() -> None:
    run_service("media", MediaSettings, setup)


if __name__ == "__main__":
    main()
