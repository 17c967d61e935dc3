"""``confab.projection.pull.fetch`` against a real JetStream, beside nats-py's own ``fetch``:
the same messages in the same batches, a message that comes while it waits, statuses
of earlier requests dropped, and a timeout when nothing comes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from confab import bus
from confab.projection.pull import fetch
from tests.waiting import until


async def pull(nc: NATS, spec: bus.StreamSpec) -> Any:
    js = nc.jetstream()
    name = "c" + uuid.uuid4().hex[:8]
    await js.add_consumer(spec.name, ConsumerConfig(durable_name=name, ack_policy=AckPolicy.ALL))
    return await js.pull_subscribe_bind(durable=name, stream=spec.name)


@pytest.fixture
async def stream(nc: NATS, stream_spec: bus.StreamSpec) -> Any:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream_spec.name, subjects=list(stream_spec.subjects)))
    yield stream_spec
    await js.delete_stream(stream_spec.name)


def subject(spec: bus.StreamSpec, key: str) -> str:
    return spec.subjects[0].replace(">", key)


async def test_it_fetches_what_nats_py_fetches_in_the_same_batches(
    nc: NATS, stream: bus.StreamSpec
) -> None:
    js = nc.jetstream()
    for i in range(1234):
        await js.publish(subject(stream, f"k{i % 7}"), f"m{i}".encode())
    ours, theirs = await pull(nc, stream), await pull(nc, stream)

    async def batches(take: Any) -> list[list[bytes]]:
        found: list[list[bytes]] = []
        while sum(len(b) for b in found) < 1234:
            msgs = await take()
            found.append([m.data for m in msgs])
            await msgs[-1].ack()
        return found

    mine = await batches(lambda: fetch(ours, 500, 2.0))
    nats_py = await batches(lambda: theirs.fetch(500, timeout=2.0))
    assert [len(b) for b in mine] == [500, 500, 234]
    assert mine == nats_py
    assert [d for b in mine for d in b] == [f"m{i}".encode() for i in range(1234)]
    # Nothing more: a timeout, as nats-py's (whose own error is a TimeoutError too).
    with pytest.raises(TimeoutError):
        await fetch(ours, 500, 0.3)
    with pytest.raises(TimeoutError):
        await theirs.fetch(500, timeout=0.3)


async def test_a_message_that_comes_while_it_waits_is_returned_and_old_statuses_are_dropped(
    nc: NATS, stream: bus.StreamSpec
) -> None:
    js = nc.jetstream()
    psub = await pull(nc, stream)
    # Two empty fetches leave statuses behind (a request's 408 when it expires, after
    # the fetch gave up): the next fetch must not take them for an answer.
    for _ in range(2):
        with pytest.raises(TimeoutError):
            await fetch(psub, 10, 0.2)
    waiting = asyncio.create_task(fetch(psub, 10, 10.0))

    async def lingers() -> bool:  # its request waits on the server: nothing is there yet
        assert not waiting.done(), "it returned before anything was published"
        return (await js.consumer_info(stream.name, psub._consumer)).num_waiting >= 1

    await until(lingers, "the fetch's request to wait on the server")
    await js.publish(subject(stream, "late"), b"late")
    msgs = await asyncio.wait_for(waiting, 10.0)
    assert [m.data for m in msgs] == [b"late"]
    await msgs[-1].ack()
    await js.publish(subject(stream, "next"), b"next")
    assert [m.data for m in await fetch(psub, 10, 5.0)] == [b"next"]
