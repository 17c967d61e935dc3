import uuid

import pytest
from nats.aio.client import Client as NATS

from confab import bus
from confab.contracts.events import Event
from confab.eventlog import WrongExpectedVersion, append, last_version, read_subject


class Noted(Event, kw_only=True, frozen=True):
    type = "test.noted"
    text: str


async def test_stale_expected_version_is_rejected(nc: NATS, stream_spec: bus.StreamSpec) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    subject = stream_spec.subjects[0].replace(">", "w1.c1")
    first = await append(
        js,
        stream_spec.name,
        subject,
        Noted(text="a"),
        msg_id=uuid.uuid4().hex,
        workspace="w1",
        expected_version=0,
    )
    with pytest.raises(WrongExpectedVersion):
        await append(
            js,
            stream_spec.name,
            subject,
            Noted(text="b"),
            msg_id=uuid.uuid4().hex,
            workspace="w1",
            expected_version=0,
        )
    second = await append(
        js,
        stream_spec.name,
        subject,
        Noted(text="b"),
        msg_id=uuid.uuid4().hex,
        workspace="w1",
        expected_version=first.seq,
    )
    assert second.seq > first.seq
    assert await last_version(js, stream_spec.name, subject) == second.seq


async def test_a_retried_append_is_stored_once(nc: NATS, stream_spec: bus.StreamSpec) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    subject = stream_spec.subjects[0].replace(">", "w1.c2")
    msg_id = uuid.uuid4().hex
    first = await append(
        js,
        stream_spec.name,
        subject,
        Noted(text="once"),
        msg_id=msg_id,
        workspace="w1",
        expected_version=0,
    )
    # The same append again, as a client would retry after a lost acknowledgement.
    retry = await append(
        js,
        stream_spec.name,
        subject,
        Noted(text="once"),
        msg_id=msg_id,
        workspace="w1",
        expected_version=0,
    )
    assert (retry.seq, retry.duplicate, first.duplicate) == (first.seq, True, False)
    unchecked = await append(
        js, stream_spec.name, subject, Noted(text="once"), msg_id=msg_id, workspace="w1"
    )
    assert (unchecked.seq, unchecked.duplicate) == (first.seq, True)
    stored = [e async for e in read_subject(nc, stream_spec.name, subject)]
    assert [e.event for e in stored] == [Noted(text="once")]


async def test_read_subject_pages_through_long_histories(
    nc: NATS, stream_spec: bus.StreamSpec
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    mine = stream_spec.subjects[0].replace(">", "w1.long")
    other = stream_spec.subjects[0].replace(">", "w1.other")
    for i in range(25):
        await append(
            js, stream_spec.name, mine, Noted(text=str(i)), msg_id=uuid.uuid4().hex, workspace="w1"
        )
        await append(
            js, stream_spec.name, other, Noted(text="x"), msg_id=uuid.uuid4().hex, workspace="w1"
        )
    events = [e async for e in read_subject(nc, stream_spec.name, mine, batch=7)]
    assert [e.event.text for e in events] == [str(i) for i in range(25)]
    assert all(e.subject == mine for e in events)
    after = [e async for e in read_subject(nc, stream_spec.name, mine, after=events[19].seq)]
    assert [e.event.text for e in after] == ["20", "21", "22", "23", "24"]
    assert [e async for e in read_subject(nc, stream_spec.name, mine + "x")] == []


async def test_streams_are_declared_idempotently_and_republish(
    nc: NATS, stream_spec: bus.StreamSpec
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    await bus.ensure_streams(js, [stream_spec])  # a second start changes nothing
    info = await js.stream_info(stream_spec.name)
    assert info.config.republish is not None and info.config.republish.dest == "live.>"
    subject = stream_spec.subjects[0].replace(">", "w1.live")
    live = await nc.subscribe("live." + subject)
    stored = await append(
        js, stream_spec.name, subject, Noted(text="hi"), msg_id=uuid.uuid4().hex, workspace="w1"
    )
    msg = await live.next_msg(timeout=5)
    assert int(msg.headers["Nats-Sequence"]) == stored.seq
    assert msg.headers["Confab-Event"] == "test.noted"
