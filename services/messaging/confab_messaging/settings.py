"""Settings of the messaging service."""

from __future__ import annotations

from confab.settings import DatabaseSettings


class MessagingSettings(DatabaseSettings, kw_only=True, frozen=True):
    pass
