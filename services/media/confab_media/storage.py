"""The object store, reached through the minio client (the only service that talks to it).

The minio client is blocking: every call that touches the network runs in a
worker thread. Presigning is local computation (the region is configured, so
the client never asks the server for it); URLs are signed for the public
endpoint when one is configured, since the signature covers the host.

Headers: a presigned GET names the ``Content-Type`` and ``Content-Disposition``
it is served with (the S3 ``response-*`` overrides, covered by the
signature), and every object is stored with the same two, so a read without
overrides is served alike. S3 has no way to add ``X-Content-Type-Options``:
no override exists, and object metadata comes back as ``x-amz-meta-*``.
MinIO sends ``nosniff`` on every response by itself; SeaweedFS (the embedded
store) and AWS S3 do not, so in front of those a proxy or CDN must add it.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import ServerError

from confab.errors import Unavailable
from confab_media.settings import MediaSettings

T = TypeVar("T")
CONNECTIONS = 16  # concurrent requests to the store (threads, and pooled connections)


def client_for(settings: MediaSettings, endpoint: str | None = None) -> Minio:
    url = urlsplit(endpoint or settings.s3_endpoint)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10, read=120),
        maxsize=CONNECTIONS,
        cert_reqs="CERT_REQUIRED" if settings.s3_verify_tls else "CERT_NONE",
        ca_certs=settings.s3_ca_file or os.environ.get("SSL_CERT_FILE") or certifi.where(),
        # A store that refuses connections is down: tell the client soon, it may retry.
        retries=urllib3.Retry(
            total=5, connect=1, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        ),
    )
    return Minio(
        url.netloc,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=url.scheme == "https",
        region=settings.s3_region,
        http_client=http,
    )


class Storage:
    def __init__(self, settings: MediaSettings) -> None:
        self.bucket = settings.s3_bucket
        self.client = client_for(settings)
        self.signer = (
            client_for(settings, settings.s3_public_endpoint)
            if settings.s3_public_endpoint
            else self.client
        )
        # Its own threads: the default pool is small and shared with image processing.
        self._pool = ThreadPoolExecutor(CONNECTIONS, thread_name_prefix="s3")

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking client call; the store being unreachable or failing is a 503."""
        call = functools.partial(fn, *args, **kwargs)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except (urllib3.exceptions.HTTPError, ServerError, OSError) as exc:
            raise Unavailable("The file store is unavailable; try again shortly.") from exc

    async def ensure_bucket(self) -> None:
        """Create the bucket if it is missing."""

        def ensure() -> None:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)

        await self._run(ensure)

    async def check(self) -> str:
        exists = await self._run(self.client.bucket_exists, self.bucket)
        return "ok" if exists else f"failing: bucket {self.bucket} is missing"

    async def put_file(self, key: str, path: Path, content_type: str, disposition: str) -> None:
        await self._run(
            self.client.fput_object,
            self.bucket,
            key,
            str(path),
            content_type=content_type,
            metadata={"Content-Disposition": disposition},
        )

    async def put_bytes(self, key: str, body: bytes, content_type: str, disposition: str) -> None:
        await self._run(
            self.client.put_object,
            self.bucket,
            key,
            io.BytesIO(body),
            len(body),
            content_type=content_type,
            metadata={"Content-Disposition": disposition},
        )

    async def remove(self, keys: list[str]) -> None:
        """Remove objects; a missing one is not an error (removing twice is fine)."""
        if not keys:
            return

        def remove() -> None:
            errors = list(self.client.remove_objects(self.bucket, [DeleteObject(k) for k in keys]))
            if errors:
                raise OSError(f"could not remove {len(errors)} objects: {errors[0]}")

        await self._run(remove)

    async def keys(self, prefix: str) -> list[str]:
        def listing() -> list[str]:
            return [
                o.object_name or ""
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            ]

        return await self._run(listing)

    def presign(self, key: str, *, expires: timedelta, content_type: str, disposition: str) -> str:
        return self.signer.presigned_get_object(
            self.bucket,
            key,
            expires=expires,
            response_headers={
                "response-content-type": content_type,
                "response-content-disposition": disposition,
            },
        )
