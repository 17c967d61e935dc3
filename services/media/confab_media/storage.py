"""The object store, reached through the minio client (the only service that talks to it)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from minio import Minio

from confab_media.settings import MediaSettings


def client_for(settings: MediaSettings) -> Minio:
    url = urlsplit(settings.s3_endpoint)
    return Minio(
        url.netloc,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=url.scheme == "https",
        region=settings.s3_region,
    )


class Storage:
    def __init__(self, settings: MediaSettings) -> None:
        self.bucket = settings.s3_bucket
        self.client = client_for(settings)

    async def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (the minio client is blocking: use a thread)."""

        def ensure() -> None:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)

        await asyncio.to_thread(ensure)

    async def check(self) -> str:
        exists = await asyncio.to_thread(self.client.bucket_exists, self.bucket)
        return "ok" if exists else f"failing: bucket {self.bucket} is missing"
