"""Settings of the messaging service."""

from __future__ import annotations

from typing import Annotated

import msgspec

from confab.settings import DatabaseSettings, PositiveFloat


class MessagingSettings(DatabaseSettings, kw_only=True, frozen=True):
    # How long a query waits for the read model to reach its ``min_seq`` (and a
    # command for a user or message the read model has not shown yet).
    read_wait_seconds: PositiveFloat = 2.0
    # Events applied per database transaction by the projections.
    projection_batch_size: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 512
    # After a short batch, how long the projections wait for more events before the
    # next transaction (a reader waiting for an event ends the wait at once).
    projection_linger_seconds: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.05
    # Conversations whose state is cached in process (each: a few bytes per message).
    aggregate_cache_size: Annotated[int, msgspec.Meta(ge=1)] = 10_000
