"""Settings of the webhooks service: where it may send, how hard and how long it tries.

Every field is also a flag and a variable, in the service's namespace
(``CONFAB_WEBHOOKS_<FIELD>``, ``--webhooks-<field>``; ``confab.settings``), but
``read_wait_seconds``, which every service reads as ``CONFAB_READ_WAIT_SECONDS``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from confab.settings import DatabaseSettings, PositiveFloat

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]

# Standard Webhooks' schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (27.6 h in all).
DEFAULT_SCHEDULE = "5,300,1800,7200,18000,36000,36000"


class WebhooksSettings(DatabaseSettings, kw_only=True, frozen=True):
    __namespace__: ClassVar[str] = "webhooks"
    __shared__: ClassVar[frozenset[str]] = frozenset({"read_wait_seconds"})

    # Endpoints whose addresses are loopback, private, link-local, shared or metadata
    # (169.254.169.254, fd00:ec2::254, …) are refused unless this is on: for `confab up`
    # on one machine and for tests, never for a platform that serves tenants.
    allow_private: bool = False
    # Seconds between a failed attempt and the next, one per retry ("1*30" is thirty
    # retries a second apart), each with ±20 % jitter; a delivery still failing after the
    # last is marked failed. A receiver's Retry-After (429, 503) is honoured instead.
    retry_schedule: str = DEFAULT_SCHEDULE
    max_retry_after_seconds: PositiveFloat = 3600.0
    # One attempt: connecting, sending and the receiver's answer.
    timeout_seconds: PositiveFloat = 10.0
    # Of an answer's body, at most this many bytes are read (the start is kept as the
    # delivery's last error when it is not a success).
    response_limit_bytes: Annotated[int, msgspec.Meta(ge=0, le=65536)] = 1024
    # An endpoint with no successful delivery for this long is disabled, with the reason.
    disable_after_seconds: PositiveFloat = 5 * 24 * 3600.0
    # Requests in flight: per endpoint, and in all, in this process.
    endpoint_concurrency: PositiveInt = 16
    concurrency: PositiveInt = 256
    # How the work is split between copies of the service (conversations, users and
    # attachments hash to partitions; a partition is worked by one copy at a time).
    # Changing it needs every copy stopped at once.
    partitions: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    # Delivered (and cancelled) deliveries are listed for this long, then removed.
    keep_seconds: PositiveFloat = 3 * 24 * 3600.0
    # After a short batch of stored events, how long an intake waits for more before its
    # next transaction (nobody waits on an intake): fewer, larger transactions under load,
    # for at most this much more latency on a delivery.
    intake_linger_seconds: Annotated[float, msgspec.Meta(ge=0, le=5)] = 0.25
    # How long an intake batch waits for the first attempts of its deliveries, to write
    # each row once with its outcome (0: every row is written before its first attempt,
    # then again with the outcome; ``delivery``'s note).
    first_attempt_wait_seconds: Annotated[float, msgspec.Meta(ge=0, le=10)] = 1.0
    # Conversation views kept in memory to render message payloads (more are read again
    # from the log when needed).
    views: PositiveInt = 10_000
    # The scheduling priority (nice) the process lowers itself to, and its session's
    # where the kernel groups processes by session (``confab.priority``): deliveries wait
    # for the CPU the real-time path does not need (0: unchanged). The lowest, 19: over
    # 24 pairs of bench runs each, sends with three endpoints kept 0.98 of their rate
    # without at 19 and 0.90 at 10, and the deliveries kept up all the same
    # (bench/README.md, session 18).
    nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 19
    # How long a command's reply waits for the read model to show what it stored.
    read_wait_seconds: PositiveFloat = 2.0
