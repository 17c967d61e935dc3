"""Settings of the identity service."""

from __future__ import annotations

from confab.settings import DatabaseSettings, PositiveFloat


class IdentitySettings(DatabaseSettings, kw_only=True, frozen=True):
    # How long a handler waits for the read model to show a write (its own, or
    # a query's ``min_seq``) before answering.
    read_wait_seconds: PositiveFloat = 2.0
    # How often timed bans that have ended are lifted (``unbans``).
    unban_interval_seconds: PositiveFloat = 1.0
