"""Settings of the notifier: where mail goes, how the work is split, how often it looks.

Fields are read in the service's namespace (``CONFAB_NOTIFIER_<FIELD>``), but the mail
server's, which are ``CONFAB_SMTP_*`` (``confab.settings``). With no ``CONFAB_SMTP_HOST``
no email is sent (the other channels and ``notification.due`` still are); ``confab up``
points it at its local mail catcher, never at the internet.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

from confab.settings import DatabaseSettings, PositiveFloat

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class NotifierSettings(DatabaseSettings, kw_only=True, frozen=True):
    __namespace__: ClassVar[str] = "notifier"
    __shared__: ClassVar[frozenset[str]] = frozenset(
        {
            "smtp_host",
            "smtp_port",
            "smtp_security",
            "smtp_username",
            "smtp_password",
            "smtp_from",
            "smtp_timeout_seconds",
            "read_wait_seconds",
        }
    )

    # The mail server (empty host: no email). "starttls" upgrades a plain connection
    # (port 587), "tls" speaks TLS from the start (465), "none" only for a local catcher.
    smtp_host: str = ""
    smtp_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 587
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str = ""
    smtp_password: str = ""
    # The envelope sender and From address; the workspace's sender name is its display name.
    smtp_from: str = "notifications@confab.invalid"
    smtp_timeout_seconds: PositiveFloat = 30.0
    # The gateway's address as users reach it: unsubscribe links point there.
    public_url: str = "http://127.0.0.1:8000"
    # Unread messages this old are never notified about (a replay of old history, a
    # notifier that was down for days).
    max_age_seconds: PositiveFloat = 24 * 3600.0
    # Used when a workspace has not set its own delay.
    default_delay_seconds: Annotated[float, msgspec.Meta(ge=0, le=7 * 24 * 3600)] = 60.0
    # A message that mentions someone makes their notification due this soon after it
    # (or the workspace's delay, if shorter).
    mention_delay_seconds: Annotated[float, msgspec.Meta(ge=0, le=7 * 24 * 3600)] = 10.0
    # How often due notifications are looked for; how many are decided in one transaction.
    tick_seconds: PositiveFloat = 0.25
    batch: PositiveInt = 500
    # Conversations hash to partitions; a partition is worked by one copy at a time.
    # Changing it needs every copy stopped at once.
    partitions: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    # Seconds before a failed delivery is tried again, doubled each time up to the last.
    retry_seconds: PositiveFloat = 5.0
    max_retry_seconds: PositiveFloat = 3600.0
    max_attempts: PositiveInt = 12
    # The push providers (never taken from a tenant's credentials). Empty APNs address:
    # production or sandbox APNs, as the workspace's key says.
    fcm_url: str = "https://fcm.googleapis.com"
    fcm_token_url: str = "https://oauth2.googleapis.com/token"
    apns_url: str = ""
    # Push endpoints on loopback or private addresses are refused unless this is on
    # (tests, one machine), as for webhooks.
    allow_private: bool = False
    # The scheduling priority (nice) the process lowers itself to, and its session's
    # where the kernel groups processes by session (``confab.priority``): notifications
    # are minutes-scale work and wait for the CPU the real-time path does not need
    # (0: unchanged).
    nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 10
    read_wait_seconds: PositiveFloat = 2.0
