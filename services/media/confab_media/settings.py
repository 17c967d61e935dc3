"""Settings of the media service: the database, the object store, and what uploads may be.

Every field is also a flag and a variable (``confab.settings``). What uploads may be is
in the media namespace: ``max_bytes`` is ``CONFAB_MEDIA_MAX_BYTES`` or
``--media-max-bytes``. The object store's settings (the gateway reads its endpoints too)
and ``read_wait_seconds`` (as identity and messaging) are shared: ``CONFAB_S3_BUCKET``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from confab.contracts.media import DEFAULT_MAX_BYTES
from confab.settings import DatabaseSettings, PositiveFloat

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class MediaSettings(DatabaseSettings, kw_only=True, frozen=True):
    __urls__: ClassVar[dict[str, tuple[str, ...]]] = {
        **DatabaseSettings.__urls__,
        "s3_endpoint": ("http", "https"),
        "s3_public_endpoint": ("http", "https"),
    }
    __namespace__: ClassVar[str] = "media"
    __shared__: ClassVar[frozenset[str]] = frozenset(
        {
            "s3_endpoint",
            "s3_access_key",
            "s3_secret_key",
            "s3_bucket",
            "s3_region",
            "s3_public_endpoint",
            "s3_ca_file",
            "s3_verify_tls",
            "read_wait_seconds",
        }
    )

    # Where media reaches the store: https:// for TLS.
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "confab"
    s3_region: str = "us-east-1"
    # Where clients reach it, if not at s3_endpoint (URLs are signed for this host).
    s3_public_endpoint: str = ""
    # TLS: a CA bundle for a private certificate authority; never turn verification off
    # outside development.
    s3_ca_file: str = ""
    s3_verify_tls: bool = True

    # Uploads: the default limit and allow-list (MIME types or "type/*", comma-separated;
    # empty: every type media recognises), and per-workspace overrides as JSON:
    # {"ws_…": {"max_bytes": 1048576, "allowed_types": ["image/*", "application/pdf"]}}.
    max_bytes: PositiveInt = DEFAULT_MAX_BYTES
    allowed_types: str = ""
    workspace_policies: str = ""
    max_image_pixels: PositiveInt = 50_000_000
    thumbnail_size: Annotated[int, msgspec.Meta(ge=16, le=2048)] = 320
    # How long presigned URLs work.
    url_seconds: Annotated[int, msgspec.Meta(ge=60, le=7 * 24 * 3600)] = 900
    # Files checked and processed at once by one process (each may hold a decoded image).
    ingest_concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    # How often abandoned ingests (their process died) and expired uploads are looked for
    # and cleaned up.
    sweep_seconds: PositiveFloat = 5.0
    # An upload no message attached within this long can no longer be attached; it is
    # purged (objects removed, attachment.deleted appended) a grace period later. The
    # grace must be longer than a send takes between checking an attachment and storing
    # the message that claims it.
    upload_ttl_seconds: PositiveInt = 24 * 3600
    upload_grace_seconds: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    # How long a reply waits for the read model to show what was just stored.
    read_wait_seconds: PositiveFloat = 2.0

    # Link previews (``previews``): on for every workspace unless switched off here or in
    # its policy ({"ws_…": {"link_previews": false}}). Each page, oEmbed answer and image
    # is fetched within the time limit and up to its size limit; pages are cached.
    link_previews: bool = True
    link_preview_timeout_seconds: PositiveFloat = 5.0
    link_preview_max_html_bytes: PositiveInt = 512 * 1024
    link_preview_max_image_bytes: PositiveInt = 5 * 1024 * 1024
    link_preview_cache_seconds: Annotated[int, msgspec.Meta(ge=0)] = 3600
    link_preview_concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    # TESTS ONLY: previews reach loopback (a page the test serves itself) and nothing
    # else: no private, link-local or metadata address, and no public one either, so a
    # test never sends traffic beyond the machine. Never in production.
    link_preview_loopback_only: bool = False
