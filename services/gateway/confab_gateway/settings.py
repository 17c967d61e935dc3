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
