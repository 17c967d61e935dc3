"""Settings of the identity service."""

from __future__ import annotations

from confab.settings import DatabaseSettings


class IdentitySettings(DatabaseSettings, kw_only=True, frozen=True):
    pass
