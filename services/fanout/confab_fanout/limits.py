"""What one address, app, user or socket may take of a fanout node.

- Connections per client address, per app and per signed-in user: counted in plain
  dicts when a socket is admitted or signs in, and given back when it goes. Past a
  limit the socket gets ``pusher:error`` 4100 "Over capacity" and a close with 4100
  (Soketi's answer to a connection quota): pusher-js reconnects after a backoff,
  and gets in once the address, app or user has a socket fewer.
- Requests on the Pusher HTTP API per app: a token bucket per app id, checked once
  the request's signature holds (unsigned requests name no app worth charging).

Every limit is per node: behind a load balancer, N nodes admit up to N times it.
A limit of 0 means no limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confab_fanout.metrics import REFUSALS
from confab_fanout.settings import FanoutSettings

Clock = Callable[[], float]


class TokenBucket:
    """``rate`` events per second, bursts up to ``burst`` (default: ``rate``)."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = rate if burst is None else burst
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait(self) -> float:
        """Seconds until the next token, as of the last ``take``."""
        return max(0.0, (1.0 - self.tokens) / self.rate)


def _add(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _remove(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class ConnectionLimits:
    """Open sockets per client address, per app and per (app, signed-in user)."""

    def __init__(self, settings: FanoutSettings) -> None:
        self.per_address = settings.max_connections_per_address
        self.per_app = settings.max_connections_per_app
        self.per_user = settings.max_connections_per_user
        self.addresses: dict[str, int] = {}
        self.apps: dict[str, int] = {}
        self.users: dict[str, int] = {}  # app id + " " + user id

    def connect(self, address: str, app_id: str) -> str | None:
        """Count a new socket in, or say why it is refused (nothing counted then)."""
        if self.per_address and self.addresses.get(address, 0) >= self.per_address:
            REFUSALS.labels("connections_per_address").inc()
            return (
                f"Over capacity: this address has {self.per_address} connections, the most allowed"
            )
        if self.per_app and self.apps.get(app_id, 0) >= self.per_app:
            REFUSALS.labels("connections_per_app").inc()
            return f"Over capacity: this app has {self.per_app} connections, the most allowed"
        _add(self.addresses, address)
        _add(self.apps, app_id)
        return None

    def disconnect(self, address: str, app_id: str) -> None:
        _remove(self.addresses, address)
        _remove(self.apps, app_id)

    def sign_in(self, app_id: str, user_id: str) -> str | None:
        """Count a socket signed in as the user, or say why it is refused."""
        key = f"{app_id} {user_id}"
        if self.per_user and self.users.get(key, 0) >= self.per_user:
            REFUSALS.labels("connections_per_user").inc()
            return f"Over capacity: this user has {self.per_user} connections, the most allowed"
        _add(self.users, key)
        return None

    def sign_out(self, app_id: str, user_id: str) -> None:
        _remove(self.users, f"{app_id} {user_id}")


class ApiRateLimit:
    """Pusher HTTP API requests per app: ``rate`` per second, bursts of ``burst``.

    One bucket per app that ever sent a signed request: bounded by the apps that exist.
    """

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}

    def take(self, app_id: str) -> float:
        """0.0 if the app may make a request now (and it is counted), else seconds to wait."""
        now = self.clock()
        bucket = self.buckets.get(app_id)
        if bucket is None:
            bucket = self.buckets[app_id] = TokenBucket(self.rate, now, self.burst)
        if bucket.take(now):
            return 0.0
        REFUSALS.labels("api_requests_per_app").inc()
        return bucket.wait()


def api_rate_limit(settings: FanoutSettings) -> ApiRateLimit | None:
    """The HTTP API's per-app limit, or None when its rate is 0 (no limit)."""
    rate = settings.api_requests_per_second
    if rate == 0:
        return None
    return ApiRateLimit(rate, settings.api_request_burst)
