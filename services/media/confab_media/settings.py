"""Settings of the media service: the database and the S3-compatible object store."""

from __future__ import annotations

from typing import ClassVar

from confab.settings import DatabaseSettings


class MediaSettings(DatabaseSettings, kw_only=True, frozen=True):
    __urls__: ClassVar[dict[str, tuple[str, ...]]] = {
        **DatabaseSettings.__urls__,
        "s3_endpoint": ("http", "https"),
    }

    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "confab"
    s3_region: str = "us-east-1"
