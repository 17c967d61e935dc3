"""Token buckets and per-credential limits on an injected clock, and their OpenAPI answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from confab.contracts.identity import ApiKeyPrincipal, SessionPrincipal
from confab.errors import RateLimited
from confab_gateway import openapi
from confab_gateway.app import endpoints
from confab_gateway.errors import error_response
from confab_gateway.ratelimit import RequestLimits, TokenBuckets
from confab_gateway.settings import GatewaySettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_sustained_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=4, clock=clock)
    assert [buckets.take("k") for _ in range(4)] == [0.0] * 4
    assert buckets.take("k") == pytest.approx(0.5)  # one token per 0.5 s
    clock.now += 0.25
    assert buckets.take("k") == pytest.approx(0.25)  # refused requests cost nothing
    clock.now += 0.25
    assert buckets.take("k") == 0.0
    assert buckets.take("k") > 0
    clock.now += 60  # refills up to the burst, never beyond it
    assert [buckets.take("k") for _ in range(4)] == [0.0] * 4
    assert buckets.take("k") > 0


def test_waiting_is_told_without_taking() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, clock=clock)
    assert buckets.wait("k") == 0.0  # unknown keys have a full bucket
    buckets.take("k")
    assert buckets.wait("k") == buckets.wait("k") == pytest.approx(1.0)
    clock.now += 1.0
    assert buckets.wait("k") == 0.0
    assert buckets.take("k") == 0.0


def test_a_token_given_back_is_there_again_never_past_the_burst() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=2, clock=clock)
    buckets.give_back("unknown")  # nothing taken: nothing to give back
    assert len(buckets) == 0
    assert [buckets.take("k") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("k") > 0
    buckets.give_back("k")  # the work it was taken for was refused
    assert buckets.take("k") == 0.0
    assert buckets.take("k") > 0
    clock.now += 60
    buckets.give_back("k")
    buckets.give_back("k")
    assert [buckets.take("k") for _ in range(3)][:2] == [0.0, 0.0]
    assert buckets.take("k") > 0


def test_each_key_has_its_own_bucket() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, clock=Clock())
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0


def test_refilled_buckets_are_dropped_and_memory_is_bounded() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=10.0, burst=20, max_keys=100, clock=clock)  # refills in 2 s
    for i in range(50):
        buckets.take(f"idle-{i}")
    clock.now += 1.0
    buckets.take("busy")
    clock.now += 1.5  # the idle ones have refilled, "busy" has not
    buckets.take("new")
    assert len(buckets) == 2
    for i in range(1000):
        buckets.take(f"flood-{i}")
    assert len(buckets) == 100


def test_an_evicted_bucket_only_gets_its_burst_back() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=2, max_keys=2, clock=clock)
    for key in ("a", "a", "b", "c"):  # "c" pushes out the least recently used "a"
        assert buckets.take(key) == 0.0
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0


def test_a_bucket_needs_a_rate_and_a_burst() -> None:
    for rate, burst in ((0.0, 10), (-1.0, 10), (1.0, 0)):
        with pytest.raises(ValueError):
            TokenBuckets(rate=rate, burst=burst)


def key(key_id: str) -> ApiKeyPrincipal:
    return ApiKeyPrincipal(workspace_id="ws_1", key_id=key_id)


def session(session_id: str) -> SessionPrincipal:
    return SessionPrincipal(
        workspace_id="ws_1", session_id=session_id, user_id="usr_1", expires_at=datetime.now(UTC)
    )


def test_api_keys_and_sessions_are_limited_apart() -> None:
    clock = Clock()
    limits = RequestLimits(
        GatewaySettings(
            api_key_requests_per_second=1.0,
            api_key_request_burst=2,
            session_requests_per_second=0.5,
            session_request_burst=1,
        ),
        clock,
    )
    limits.check(key("key_a"))
    limits.check(key("key_a"))
    with pytest.raises(RateLimited) as caught:
        limits.check(key("key_a"))
    assert caught.value.retry_after == 1.0
    assert "this API key" in caught.value.message
    limits.check(key("key_b"))
    limits.check(session("ses_a"))  # sessions have buckets of their own
    with pytest.raises(RateLimited) as over:
        limits.check(session("ses_a"))
    assert over.value.retry_after == 2.0
    limits.check(None)  # admin and public calls are not limited here

    response = error_response(over.value)
    assert response.status == 429
    assert response.headers["Retry-After"] == "2"
    assert json.loads(response.text or "") == {
        "error": {
            "code": "rate_limited",
            "message": over.value.message,
            "details": {"retry_after": 2.0},
        }
    }

    clock.now += 2.0
    limits.check(key("key_a"))
    limits.check(session("ses_a"))


def test_a_rate_of_zero_turns_a_limit_off() -> None:
    limits = RequestLimits(
        GatewaySettings(api_key_requests_per_second=0, session_requests_per_second=0), Clock()
    )
    for _ in range(10_000):
        limits.check(key("key_a"))
        limits.check(session("ses_a"))


def test_the_default_limits_leave_room_for_bursts() -> None:
    defaults = GatewaySettings()
    assert defaults.api_key_request_burst >= defaults.api_key_requests_per_second > 0
    assert defaults.session_request_burst >= defaults.session_requests_per_second > 0


def test_the_document_says_which_operations_can_be_rate_limited() -> None:
    doc = openapi.document(endpoints())
    for e in endpoints():
        responses = doc["paths"][e.path][e.method.lower()]["responses"]
        # Public routes are limited only where they say so (visitor sessions, per address).
        limited = e.auth != "public" or 429 in e.errors
        assert ("429" in responses) == limited, (e.method, e.path)
        if "429" in responses:
            assert "Retry-After" in responses["429"]["headers"]
