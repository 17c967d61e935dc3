"""Idempotency-Key claims on a real NATS KV bucket, as two gateway copies see them.

Each copy has its own NATS connection and opens the bucket itself, as two gateway
processes do; what one claims or answers, the other sees. The whole path through
the HTTP API (replay, 422, 409, scopes) is in ``tests/test_idempotency_api.py``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp import web

from confab import bus
from confab.errors import Conflict, InvalidRequest
from confab_gateway import idempotency
from confab_gateway.idempotency import Claim, Claims, Record
from confab_infra.testing import TestBackends


@pytest.fixture
async def copies(backends: TestBackends) -> AsyncIterator[tuple[Claims, Claims]]:
    bucket = f"idem_{uuid.uuid4().hex[:8]}"
    connections = [await bus.connect(backends.nats_url, f"test-idem-{i}") for i in range(2)]
    try:
        first, second = await asyncio.gather(
            *(Claims.open(nc.jetstream(), bucket) for nc in connections)
        )
        yield first, second
        await connections[0].jetstream().delete_key_value(bucket)
    finally:
        for nc in connections:
            await bus.close(nc)


def answer(status: int, body: bytes = b"") -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json")


async def test_one_copy_claims_the_other_waits_then_gets_the_answer(
    copies: tuple[Claims, Claims],
) -> None:
    a, b = copies
    claim = await a.claim("key k1", "order-1", "fingerprint")
    assert isinstance(claim, Claim)
    with pytest.raises(Conflict):
        await b.claim("key k1", "order-1", "fingerprint")

    await a.answer(claim, answer(201, b'{"id":"c1"}'))
    replay = await b.claim("key k1", "order-1", "fingerprint")
    assert isinstance(replay, web.Response)
    assert (replay.status, replay.body) == (201, b'{"id":"c1"}')
    assert replay.headers[idempotency.REPLAYED] == "true"

    with pytest.raises(InvalidRequest) as refused:
        await b.claim("key k1", "order-1", "another request")
    assert refused.value.details == {"Idempotency-Key": "used with a different request"}


async def test_keys_are_scoped_per_credential(copies: tuple[Claims, Claims]) -> None:
    a, b = copies
    mine = await a.claim("key k1", "same-key", "f")
    theirs = await b.claim("user ws u1", "same-key", "f")
    assert isinstance(mine, Claim) and isinstance(theirs, Claim)
    assert mine.name != theirs.name


@pytest.mark.parametrize(
    ("status", "kept"),
    [
        *[(200, True), (204, True), (400, True), (404, True), (422, True)],
        *[(500, False), (503, False), (408, False), (429, False)],
    ],
)
async def test_success_and_final_client_errors_are_kept_other_answers_give_the_key_back(
    copies: tuple[Claims, Claims], status: int, kept: bool
) -> None:
    a, b = copies
    claim = await a.claim("key k1", f"answer-{status}", "f")
    assert isinstance(claim, Claim)
    await a.answer(claim, answer(status, b"" if status == 204 else b'{"x":1}'))
    again = await b.claim("key k1", f"answer-{status}", "f")
    if kept:
        assert isinstance(again, web.Response) and again.status == status
    else:
        assert isinstance(again, Claim)  # a retry runs again


async def test_a_claim_whose_gateway_died_is_taken_over(copies: tuple[Claims, Claims]) -> None:
    a, b = copies
    claim = await a.claim("key k1", "orphan", "f")
    assert isinstance(claim, Claim)
    # The claiming gateway died long ago, never answering.
    old = Record(fingerprint="f", claimed_at=time.time() - idempotency.STALE_AFTER - 1)
    await a.kv.put(claim.name, msgspec.msgpack.encode(old))
    taken = await b.claim("key k1", "orphan", "f")
    assert isinstance(taken, Claim)
    with pytest.raises(Conflict):  # and it is the new owner's now
        await a.claim("key k1", "orphan", "f")


async def test_the_bucket_keeps_answers_for_24_hours(copies: tuple[Claims, Claims]) -> None:
    status = await copies[0].kv.status()
    assert (status.ttl, status.history) == (idempotency.TTL_SECONDS, 1)
