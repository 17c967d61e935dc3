"""Settings of the fanout service (the Pusher-protocol socket gateway)."""

from __future__ import annotations

from confab.settings import Port, Settings


class FanoutSettings(Settings, kw_only=True, frozen=True):
    fanout_host: str = "127.0.0.1"
    fanout_port: Port = 6001
