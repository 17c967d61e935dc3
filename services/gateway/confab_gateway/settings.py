"""Settings of the gateway (the public HTTP API)."""

from __future__ import annotations

from confab.settings import Port, Settings


class GatewaySettings(Settings, kw_only=True, frozen=True):
    gateway_host: str = "127.0.0.1"
    gateway_port: Port = 8000
    admin_token: str = ""
    max_body_bytes: int = 1024 * 1024
    # Where widgets open their Pusher-protocol socket (told to them by /api/widget/me).
    fanout_ws_url: str = "ws://127.0.0.1:6001"
    # The demo workspace's API key: /demo creates rooms and guests with it (`confab up`
    # passes it). Unset, /demo and its endpoints answer 404.
    demo_api_key: str = ""
    # Where attachment URLs point (presigned S3, public endpoint first): the demo page's
    # Content-Security-Policy allows images from there (from the environment).
    s3_endpoint: str = ""
    s3_public_endpoint: str = ""
