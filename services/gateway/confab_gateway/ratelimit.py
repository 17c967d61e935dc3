"""Request rate limits: token buckets per API key, per widget session, per address.

Valid credentials are limited per API key and per session (``RequestLimits``);
made-up ones per client address (``failed_authentications``, used by
``Authenticator``), since each costs a round trip to identity.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; each
request takes one, and a request that finds none is answered 429 with the
seconds until the next token. State lives in this gateway process only: behind
a load balancer, N gateways let a credential through up to N times the limit
(no shared state, no round trip on the hot path).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from confab.contracts.identity import ApiKeyPrincipal, SessionPrincipal, StaffPrincipal
from confab.errors import RateLimited
from confab_gateway.settings import GatewaySettings

Clock = Callable[[], float]


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class TokenBuckets:
    """One token bucket per key: ``burst`` requests at once, then ``rate`` per second.

    Buckets are kept least recently used first. One untouched for ``burst / rate``
    seconds has refilled, which is the same as having no bucket, so it is dropped
    when a new key arrives: memory follows the keys active in that window, and
    never passes ``max_keys`` (past it the least recently used bucket goes even if
    not full, which only gives that key a fresh burst).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 100_000,
        clock: Clock = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("a token bucket needs rate > 0, burst >= 1 and max_keys >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.refill_seconds = self.burst / rate
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if there was one, else the seconds until there is."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._evict(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            self._buckets.move_to_end(key)
            tokens = bucket.tokens + (now - bucket.at) * self.rate
            bucket.tokens = tokens if tokens < self.burst else self.burst
            bucket.at = now
        if bucket.tokens < 1.0:
            return (1.0 - bucket.tokens) / self.rate
        bucket.tokens -= 1.0
        return 0.0

    def give_back(self, key: str) -> None:
        """Return a token ``take`` gave for work that was then refused (never past ``burst``)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + 1.0)

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token (0.0: it has one now), without taking it."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = bucket.tokens + (self.clock() - bucket.at) * self.rate
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _evict(self, now: float) -> None:
        """Drop the buckets that have refilled, and the oldest ones past ``max_keys``."""
        buckets = self._buckets
        refilled_before = now - self.refill_seconds
        while buckets:
            oldest = buckets[next(iter(buckets))]
            if oldest.at > refilled_before and len(buckets) < self.max_keys:
                return
            buckets.popitem(last=False)


def retry_after(wait: float) -> float:
    """A wait in whole milliseconds, never 0 (the body's ``details.retry_after``)."""
    return math.ceil(wait * 1000) / 1000


class RequestLimits:
    """The per-credential limits of the tenant and widget APIs (none for the admin API)."""

    def __init__(self, settings: GatewaySettings, clock: Clock = time.monotonic) -> None:
        self.api_keys = _limiter(
            settings.api_key_requests_per_second, settings.api_key_request_burst, clock
        )
        self.sessions = _limiter(
            settings.session_requests_per_second, settings.session_request_burst, clock
        )

    def check(self, principal: ApiKeyPrincipal | SessionPrincipal | StaffPrincipal | None) -> None:
        """Raise ``RateLimited`` if ``principal`` is over its limit; count the request if not."""
        if isinstance(principal, ApiKeyPrincipal):
            buckets, key, what = self.api_keys, principal.key_id, "this API key"
        elif isinstance(principal, SessionPrincipal | StaffPrincipal):
            buckets, key, what = self.sessions, principal.session_id, "this session"
        else:
            return
        if buckets is None:
            return
        wait = buckets.take(key)
        if wait:
            retry = retry_after(wait)
            raise RateLimited(
                f"Too many requests for {what}: at most {buckets.rate:g} per second "
                f"(bursts of {buckets.burst:g}); retry after {retry:g} s.",
                retry_after=retry,
            )


def failed_authentications(
    settings: GatewaySettings, clock: Clock = time.monotonic
) -> TokenBuckets | None:
    """Failed authentications per client address (``Authenticator``), or None for no limit."""
    return _limiter(settings.auth_failures_per_second, settings.auth_failure_burst, clock)


def _limiter(rate: float, burst: int, clock: Clock) -> TokenBuckets | None:
    """Buckets for one credential kind, or None when its rate is 0 (no limit)."""
    if rate == 0:
        return None
    return TokenBuckets(rate, burst, clock=clock)
