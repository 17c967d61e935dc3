"""Settings of the gateway (the public HTTP API).

Where it listens and what it keeps per copy are in the gateway's namespace
(``confab.settings``): ``port`` is ``CONFAB_GATEWAY_PORT`` or ``--gateway-port``. The
rest keep the names they were documented under (``CONFAB_ADMIN_TOKEN``,
``CONFAB_API_KEY_REQUESTS_PER_SECOND``, …), and those read by other services too
(``trusted_proxies``, the S3 endpoints) are shared.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from confab.settings import Port, Settings

# Requests per second (0: no limit) and the burst allowed above that rate.
Rate = Annotated[float, msgspec.Meta(ge=0)]
Burst = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]


class GatewaySettings(Settings, kw_only=True, frozen=True):
    __namespace__: ClassVar[str] = "gateway"
    __shared__: ClassVar[frozenset[str]] = frozenset(
        {
            "admin_token",
            "max_body_bytes",
            "api_key_requests_per_second",
            "api_key_request_burst",
            "session_requests_per_second",
            "session_request_burst",
            "auth_failures_per_second",
            "auth_failure_burst",
            "auth_stale_seconds",
            "trusted_proxies",
            "fanout_ws_url",
            "demo_api_key",
            "s3_endpoint",
            "s3_public_endpoint",
        }
    )

    host: str = "127.0.0.1"
    port: Port = 8000
    # The folder of confab up's mail catcher: shown at /dev/mail (empty: no such page).
    dev_mail_dir: str = ""
    admin_token: str = ""
    max_body_bytes: int = 1024 * 1024
    # Open connections per client address (more: 429 and closed at once; 0: no limit).
    # Timeouts for slow clients are the shared http_* settings (confab.settings).
    max_connections_per_address: Annotated[int, msgspec.Meta(ge=0)] = 1024
    # The NATS KV bucket of Idempotency-Key answers (24 h), shared by every gateway copy.
    idempotency_bucket: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = (
        "idempotency"
    )
    # Request rate limits per credential, in this process (N gateways: up to N times as
    # much). A tenant backend's API key serves all its users; a widget session is one
    # browser, and the benchmarks drive one session far harder than a person can.
    api_key_requests_per_second: Rate = 1000.0
    api_key_request_burst: Burst = 2000
    session_requests_per_second: Rate = 200.0
    session_request_burst: Burst = 400
    # Failed authentications per client address. Over it, that address's credentials not
    # verified recently are answered 429 unchecked (verified ones go on).
    auth_failures_per_second: Rate = 10.0
    auth_failure_burst: Burst = 100
    # While identity cannot answer (its database is down), credentials it verified within
    # this many seconds are still accepted; revocations still end them at once.
    auth_stale_seconds: Seconds = 300.0
    # Load balancers whose X-Forwarded-For names the client (comma-separated addresses or
    # networks): without it, per-address limits see every client behind one as one.
    trusted_proxies: str = ""
    # Where widgets open their Pusher-protocol socket (told to them by /api/widget/me).
    fanout_ws_url: str = "ws://127.0.0.1:6001"
    # The demo workspace's API key: /demo creates rooms and guests with it (`confab up`
    # passes it). Unset, /demo and its endpoints answer 404.
    demo_api_key: str = ""
    # Where attachment URLs point (presigned S3, public endpoint first): the demo page's
    # Content-Security-Policy allows images from there (from the environment).
    s3_endpoint: str = ""
    s3_public_endpoint: str = ""
