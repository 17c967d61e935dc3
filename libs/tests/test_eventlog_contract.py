"""``EventLog``'s promises, kept alike by the JetStream log and the in-memory one.

Each check runs against a ``MemoryLog`` (no backend) and a ``JetStreamLog`` on
a stream of its own, so the fast tests of command handling stand on the same
behaviour as the service does.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client as NATS

from confab import bus
from confab.contracts.events import Event
from confab.eventlog import EventLog, JetStreamLog, WrongExpectedVersion
from confab.memlog import MemoryLog


class Noted(Event, kw_only=True, frozen=True):
    type = "test.contract.noted"
    text: str


def mid() -> str:
    return uuid.uuid4().hex


async def texts(log: EventLog, subject: str, after: int = 0, limit: int = 0) -> list[str]:
    return [e.event.text async for e in log.read(subject, after, limit)]  # type: ignore[attr-defined]


async def a_stale_expected_version_stores_nothing(log: EventLog, subject: str) -> None:
    first = await log.append(
        subject, Noted(text="a"), msg_id=mid(), workspace="w1", expected_version=0
    )
    with pytest.raises(WrongExpectedVersion):
        await log.append(subject, Noted(text="b"), msg_id=mid(), workspace="w1", expected_version=0)
    second = await log.append(
        subject, Noted(text="b"), msg_id=mid(), workspace="w1", expected_version=first.seq
    )
    unchecked = await log.append(subject, Noted(text="c"), msg_id=mid(), workspace="w1")
    assert first.seq < second.seq < unchecked.seq
    assert not (first.duplicate or second.duplicate or unchecked.duplicate)
    assert await texts(log, subject) == ["a", "b", "c"]


async def a_retried_append_is_stored_once(log: EventLog, subject: str) -> None:
    msg_id = mid()
    first = await log.append(
        subject, Noted(text="once"), msg_id=msg_id, workspace="w1", expected_version=0
    )
    # As a client retries after a lost acknowledgement: the same id, the same expectation.
    retry = await log.append(
        subject, Noted(text="once"), msg_id=msg_id, workspace="w1", expected_version=0
    )
    unchecked = await log.append(subject, Noted(text="once"), msg_id=msg_id, workspace="w1")
    assert (retry.seq, retry.duplicate) == (unchecked.seq, unchecked.duplicate) == (first.seq, True)
    assert await texts(log, subject) == ["once"]


async def a_subject_reads_in_order_after_a_version_and_up_to_a_limit(
    log: EventLog, subject: str
) -> None:
    other = subject + "x"
    stored = []
    for i in range(7):
        stored.append(await log.append(subject, Noted(text=str(i)), msg_id=mid(), workspace="w1"))
        await log.append(other, Noted(text="other"), msg_id=mid(), workspace="w1")
    assert await texts(log, subject) == [str(i) for i in range(7)]
    assert await texts(log, subject, after=stored[4].seq) == ["5", "6"]
    assert await texts(log, subject, after=stored[1].seq, limit=2) == ["2", "3"]
    assert await texts(log, subject + "y") == []
    (envelope,) = [e async for e in log.read(subject, after=stored[2].seq - 1, limit=1)]
    assert (envelope.seq, envelope.subject, envelope.type) == (
        stored[2].seq,
        subject,
        "test.contract.noted",
    )


async def the_last_version_is_the_sequence_of_the_subjects_last_event(
    log: EventLog, subject: str
) -> None:
    assert await log.last_version(subject) == 0
    await log.append(subject, Noted(text="a"), msg_id=mid(), workspace="w1")
    last = await log.append(subject, Noted(text="b"), msg_id=mid(), workspace="w1")
    await log.append(subject + "x", Noted(text="c"), msg_id=mid(), workspace="w1")
    assert await log.last_version(subject) == last.seq


async def an_event_keeps_its_headers(log: EventLog, subject: str) -> None:
    msg_id = mid()
    await log.append(
        subject, Noted(text="h"), msg_id=msg_id, workspace="w1", actor="usr_1", correlation="c1"
    )
    await log.append(subject, Noted(text="i"), msg_id="m2" + msg_id, workspace="w1")
    first, second = [e async for e in log.read(subject)]
    assert (first.msg_id, first.workspace, first.actor, first.correlation) == (
        msg_id,
        "w1",
        "usr_1",
        "c1",
    )
    assert second.correlation == second.msg_id  # a call's first event starts its correlation


Check = Callable[[EventLog, str], Awaitable[None]]
CHECKS: list[Check] = [
    a_stale_expected_version_stores_nothing,
    a_retried_append_is_stored_once,
    a_subject_reads_in_order_after_a_version_and_up_to_a_limit,
    the_last_version_is_the_sequence_of_the_subjects_last_event,
    an_event_keeps_its_headers,
]
IDS = [check.__name__ for check in CHECKS]


@pytest.mark.parametrize("check", CHECKS, ids=IDS)
async def test_the_memory_log_keeps_the_promise(check: Check) -> None:
    await check(MemoryLog(), "t.evt.w1.c1")


@pytest.mark.parametrize("check", CHECKS, ids=IDS)
async def test_the_jetstream_log_keeps_the_promise(
    check: Check, nc: NATS, stream_spec: bus.StreamSpec
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    log = JetStreamLog(nc, js, stream_spec.name)
    await check(log, stream_spec.subjects[0].replace(">", "w1.c1"))
