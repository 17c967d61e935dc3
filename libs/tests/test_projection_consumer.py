"""The JetStream side of a projection on its own (real NATS): a consumer made afresh starts
where it is told even past what an earlier one acknowledged, and a message that cannot be
read is skipped, not fatal."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from confab import bus
from confab.events import H_EVENT
from confab.projection import consumer_name
from confab.projection.consumer import (
    durable_name,
    open_message,
    open_or_skip,
    subscribe_from,
    unsubscribe,
)
from libs.tests.test_projection import Counts, publish
from libs.tests.test_projection_partitions import Journal


async def test_a_consumer_made_again_starts_where_it_is_told(
    nc: NATS, stream_spec: bus.StreamSpec
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    projection = Counts(stream_spec)
    last = await publish(nc, stream_spec, ["a", "b", "c", "d", "e"])
    durable = durable_name(projection, 0x1234)
    assert durable == consumer_name(projection.name)  # one partition: one shared name

    psub = await subscribe_from(js, projection, durable, 1, batch_size=10)
    msgs = await psub.fetch(10, timeout=5)
    assert [m.metadata.sequence.stream for m in msgs] == list(range(last - 4, last + 1))
    await msgs[-1].ack()  # acknowledges all five
    await unsubscribe(psub)

    # Made again at the third event: what the old consumer acknowledged comes again.
    start = last - 2
    psub = await subscribe_from(js, projection, durable, start, batch_size=10)
    msgs = await psub.fetch(10, timeout=5)
    await unsubscribe(psub)
    envelopes = [open_message(m) for m in msgs]
    assert [(e.seq, e.event.key) for e in envelopes] == [
        (start, "c"),
        (start + 1, "d"),
        (start + 2, "e"),
    ]
    assert all(e.subject.endswith(f"w1.{e.event.key}") for e in envelopes)
    assert len(await js.consumers_info(stream_spec.name)) == 1


def test_each_process_of_a_partitioned_projection_has_a_consumer_of_its_own(
    stream_spec: bus.StreamSpec,
) -> None:
    projection = Journal(stream_spec, "any")
    name = consumer_name(projection.name)
    assert name == "proj_" + projection.name.replace(".", "_")
    assert durable_name(projection, 0xABC) == f"{name}_00000abc"
    assert durable_name(projection, 0xABC) != durable_name(projection, 0xABD)


async def test_a_message_that_cannot_be_read_is_skipped(
    nc: NATS, stream_spec: bus.StreamSpec
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    projection = Counts(stream_spec)
    subject = stream_spec.subjects[0].replace(">", "w1.x")
    await js.publish(subject, b"no headers at all")
    await js.publish(subject, b"{}", headers={H_EVENT: "test.never_declared"})
    await js.publish(subject, b"not json", headers={H_EVENT: "test.counted"})
    last = await publish(nc, stream_spec, ["fine"])

    psub = await subscribe_from(js, projection, consumer_name(projection.name), 1, 10)
    msgs = await psub.fetch(10, timeout=5)
    await unsubscribe(psub)
    opened = [open_or_skip(projection.name, m) for m in msgs]
    assert opened[:3] == [None, None, None]
    assert opened[3] is not None
    assert (opened[3].seq, opened[3].event.key) == (last, "fine")
