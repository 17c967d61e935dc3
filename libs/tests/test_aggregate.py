"""The command shell over the in-memory log: load, decide, append, retry, recognise a retry.

A small decider (a tally that can be raised, closed and opened again) is run by
``Aggregates`` on a ``MemoryLog``; two ``Aggregates`` on one log are two
processes, each with its own cache.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from confab import aggregate
from confab.aggregate import MAX_ATTEMPTS, Aggregates, Executed
from confab.contracts.events import Event
from confab.decider import NOTHING, Decider, Decision, emit
from confab.errors import Conflict, InvalidRequest
from confab.eventlog import Appended, WrongExpectedVersion
from confab.memlog import MemoryLog
from confab.rpc import CallContext
from confab.shell import CommandShell, Intent

SUBJECT = "t.evt.w1.tally"


class Raised(Event, kw_only=True, frozen=True):
    type = "test.tally.raised"
    by: int


class Closed(Event, kw_only=True, frozen=True):
    type = "test.tally.closed"


class Opened(Event, kw_only=True, frozen=True):
    type = "test.tally.opened"


@dataclass(slots=True)
class Tally:
    total: int = 0
    closed: bool = False
    positions: tuple[int, ...] = ()  # where its events are stored (told by the shell)


@dataclass(frozen=True, slots=True)
class Raise:
    by: int
    twice: bool = False  # two events in one decision


@dataclass(frozen=True, slots=True)
class Close:
    open: bool = False  # open it again instead


def evolve(state: Tally, event: Event) -> Tally:
    if isinstance(event, Raised):
        return replace(state, total=state.total + event.by)
    if isinstance(event, Closed | Opened):
        return replace(state, closed=isinstance(event, Closed))
    return state


def decide(command: Raise | Close, state: Tally) -> Decision[Any]:
    match command:
        case Raise():
            if state.closed:
                raise InvalidRequest("The tally is closed.")
            if command.by == 0:
                return Decision(state.total)  # nothing to append; the total as the result
            events = [Raised(by=command.by)] * (2 if command.twice else 1)
            return Decision(state.total + command.by * len(events), events)
        case Close():
            if state.closed != command.open:
                return NOTHING
            return emit(Opened() if command.open else Closed())
    raise TypeError(command)


def noted(state: Tally, _event: Event, seq: int) -> None:
    state.positions = (*state.positions, seq)


TALLY: Decider[Raise | Close, Tally] = Decider(initial=Tally, evolve=evolve, decide=decide)
NOTED: Decider[Raise | Close, Tally] = Decider(
    initial=Tally, evolve=evolve, decide=decide, stored=noted
)


async def run(
    tallies: Aggregates[Raise | Close, Tally], command: Raise | Close, msg_id: str
) -> Executed[Tally]:
    return await tallies.execute(SUBJECT, command, msg_id=msg_id, workspace="w1")


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregate, "BACKOFF_SECONDS", 0.0)


async def test_a_command_appends_its_events_and_the_next_one_reads_nothing() -> None:
    log = MemoryLog()
    tallies = Aggregates(log, TALLY)
    done = await run(tallies, Raise(by=2), "m1")
    assert (done.version, done.positions, done.state, done.result) == (1, (1,), Tally(2), 2)
    assert done.event == Raised(by=2) and not done.duplicate
    reads = log.reads
    again = await run(tallies, Raise(by=3), "m2")
    assert (again.version, again.state.total, log.reads) == (2, 5, reads)  # cached
    assert log.events(SUBJECT) == [Raised(by=2), Raised(by=3)]


async def test_two_events_of_one_decision_are_appended_in_order_under_their_own_ids() -> None:
    log = MemoryLog()
    done = await run(Aggregates(log, TALLY), Raise(by=3, twice=True), "m1")
    assert (done.positions, done.version, done.state.total, done.result) == ((1, 2), 2, 6, 6)
    assert [log.envelope(seq).msg_id for seq in done.positions] == ["m1", "m1/2"]


async def test_a_writer_that_lost_the_race_catches_up_and_decides_again() -> None:
    log = MemoryLog()
    first, second = Aggregates(log, TALLY), Aggregates(log, TALLY)
    await run(first, Raise(by=1), "a")
    await run(second, Raise(by=10), "b")  # first's cache is now a version behind
    done = await run(first, Raise(by=100), "c")
    assert (done.state.total, done.version) == (111, 3)
    assert log.events(SUBJECT) == [Raised(by=1), Raised(by=10), Raised(by=100)]


async def test_a_retry_stored_before_is_recognised_by_its_message_id() -> None:
    log = MemoryLog()
    first, second = Aggregates(log, TALLY), Aggregates(log, TALLY)
    await run(first, Raise(by=1), "same")
    await run(first, Raise(by=2), "other")
    # Another process, which never saw it, runs the first command again.
    again = await run(second, Raise(by=1), "same")
    assert again.duplicate and again.positions == (1,)
    assert (again.state.total, again.version) == (3, 2)  # the log's state, not the decision's
    assert log.events(SUBJECT) == [Raised(by=1), Raised(by=2)]


async def test_past_the_duplicate_window_a_message_id_is_new_again() -> None:
    now = [0.0]
    log = MemoryLog(duplicate_window=120, clock=lambda: now[0])
    first, second = Aggregates(log, TALLY), Aggregates(log, TALLY)
    await run(first, Raise(by=1), "same")
    now[0] = 121.0
    again = await run(second, Raise(by=1), "same")
    assert not again.duplicate and again.state.total == 2  # deciders must not rely on it


async def test_a_rejection_on_a_cached_state_is_checked_against_the_log() -> None:
    log = MemoryLog()
    first, second = Aggregates(log, TALLY), Aggregates(log, TALLY)
    await run(first, Close(), "close")  # first caches: closed
    await run(second, Close(open=True), "open")
    done = await run(first, Raise(by=1), "raise")  # refused on the cache, allowed by the log
    assert (done.state, done.version) == (Tally(1, closed=False), 3)
    await run(second, Close(), "close again")
    with pytest.raises(InvalidRequest):  # refused by the log too: final
        await run(first, Raise(by=1), "raise again")


async def test_a_no_op_on_a_cached_state_is_checked_against_the_log() -> None:
    log = MemoryLog()
    first, second = Aggregates(log, TALLY), Aggregates(log, TALLY)
    await run(first, Close(), "close")  # first caches: closed
    await run(second, Close(open=True), "open")
    done = await run(first, Close(), "close again")  # a no-op on the cache, not on the log
    assert done.events == (Closed(),) and done.state.closed and done.version == 3


async def test_a_decision_without_events_returns_its_result_and_the_current_version() -> None:
    log = MemoryLog()
    tallies = Aggregates(log, TALLY)
    await run(tallies, Raise(by=5), "a")
    done = await run(tallies, Raise(by=0), "b")
    assert (done.result, done.events, done.positions, done.version) == (5, (), (), 1)


class Contended(MemoryLog):
    """A log on which some other writer always got there first."""

    async def append(self, subject: str, event: Event, **_: Any) -> Appended:  # type: ignore[override]
        self.appends += 1
        raise WrongExpectedVersion(subject, 0)


async def test_an_aggregate_that_always_loses_gives_up_with_a_conflict() -> None:
    log = Contended()
    with pytest.raises(Conflict):
        await run(Aggregates(log, TALLY), Raise(by=1), "m")
    assert log.appends == MAX_ATTEMPTS


async def test_the_decider_is_told_where_each_folded_event_is_stored() -> None:
    log = MemoryLog()
    writer, reader = Aggregates(log, NOTED), Aggregates(log, NOTED)
    await run(writer, Raise(by=7), "a")
    done = await run(writer, Raise(by=1, twice=True), "b")
    assert done.state.positions == (1, 2, 3)
    loaded, version = await reader.load(SUBJECT)
    assert (loaded.positions, version) == ((1, 2, 3), 3)


async def test_the_cache_holds_at_most_its_size_and_forgets_the_least_used() -> None:
    log = MemoryLog()
    tallies = Aggregates(log, TALLY, cache_size=2)
    for name in ("a", "b", "c"):
        await tallies.execute(f"t.evt.w1.{name}", Raise(by=1), msg_id=name, workspace="w1")
    reads = log.reads
    await tallies.load("t.evt.w1.b")
    await tallies.load("t.evt.w1.c")
    assert log.reads == reads
    await tallies.load("t.evt.w1.a")  # the least used one was dropped: read again
    assert log.reads == reads + 1


async def test_a_query_asks_the_cached_state_and_a_refusal_is_asked_again_of_the_log() -> None:
    log = MemoryLog()
    first, second = Aggregates(log, TALLY), Aggregates(log, TALLY)
    await run(first, Raise(by=1), "a")
    await run(second, Raise(by=2), "b")  # first's cache: total 1

    def at_least_three(state: Tally) -> int:
        if state.total < 3:
            raise InvalidRequest("Not yet.")
        return state.total

    assert await first.query(SUBJECT, at_least_three) == 3
    with pytest.raises(InvalidRequest):
        await Aggregates(log, TALLY).query(SUBJECT, lambda s: at_least_three(replace(s, total=0)))


async def test_the_shell_runs_each_call_under_a_fresh_message_id_and_replies_ok() -> None:
    log = MemoryLog()
    shell = CommandShell(Aggregates(log, TALLY))

    async def prepare(request: int, _ctx: CallContext) -> Intent[Raise | Close]:
        return Intent(SUBJECT, Raise(by=request), "w1", "usr_1")

    handle = shell.handler(prepare)
    first = await handle(2, CallContext(correlation="corr"))
    second = await handle(2, CallContext())
    assert (first.seq, second.seq) == (1, 2)  # two calls, two ids: two appends
    stored = log.envelope(1)
    assert (stored.actor, stored.correlation, stored.workspace) == ("usr_1", "corr", "w1")
    assert stored.msg_id.startswith("evt_") and stored.msg_id != log.envelope(2).msg_id
