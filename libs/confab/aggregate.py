"""Running a decider against the event log: load, decide, append, retry on conflict.

``Aggregates`` holds one kind of aggregate (a ``confab.decider.Decider``) in
one stream (a ``confab.eventlog.EventLog``). Each subject of the stream is one
aggregate; its state is cached in process with the version (the stream
sequence of its last event) it was built at.

``execute(subject, command)``:

1. load the state: the cached one, or the log's (caught up from the cached
   version, or folded from the start);
2. ``decide(command, state)``; a rejection or a decision without events made
   on a cached state is checked once more against the log, since another
   process may have changed the aggregate;
3. append the decided events in order, each expecting the version before it,
   the first under the command's message id and the next ones under
   ``<msg id>/2``, ``/3``, …;
4. when another writer got there first (``WrongExpectedVersion``), back off a
   little (with jitter), catch up from the log and decide again, at most
   ``MAX_ATTEMPTS`` times; when the log says an append was stored before under
   its message id (a retry), the log is the truth: the state is caught up from
   it and the command counts as done (``Executed.duplicate``);
5. return the state after it, its version, the decision's result and the
   events stored.

So a busy aggregate costs no read per command and a cold one is loaded once.
Writers of one aggregate in one process take turns (``Turns``): racing each
other to the log would only make all but one lose; only other processes can
make an append lose.

JetStream has no transaction over several messages, so the events of one
decision are appended one by one: if the process dies between two, the first
ones are stored and the next attempt decides on a state that has them.

With a ``KeyRing``, personal fields are sealed on the way to the log and
revealed on the way back; the cached state always holds them revealed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Generic, TypeVar

import msgspec

from confab.contracts.events import Event
from confab.decider import Decider, Decision
from confab.errors import ConfabError, Conflict
from confab.eventlog import EventLog, WrongExpectedVersion
from confab.events import Envelope
from confab.personal import KeyRing

C = TypeVar("C")
S = TypeVar("S")
T = TypeVar("T")

MAX_ATTEMPTS = 12
BACKOFF_SECONDS = 0.002  # doubled per lost attempt, with jitter


class Turns:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._locks.pop(key, None)


class Executed(msgspec.Struct, Generic[S], frozen=True):
    """What a command did: the state after it and its version, the decision's result,
    and the events it stored (none when it changed nothing)."""

    state: S
    version: int
    result: Any = None
    events: Sequence[Event] = ()
    positions: tuple[int, ...] = ()  # the stream sequence of each event stored
    duplicate: bool = False  # stored by an earlier attempt: positions holds where, then

    @property
    def event(self) -> Event | None:
        """The first event stored, if any."""
        return self.events[0] if self.events else None


class Aggregates(Generic[C, S]):
    """One kind of aggregate in one stream, with a bounded cache of states."""

    def __init__(
        self,
        log: EventLog,
        decider: Decider[C, S],
        *,
        cache_size: int = 50_000,
        keys: KeyRing | None = None,
    ) -> None:
        self.log = log
        self.decider = decider
        self.cache_size = cache_size
        self.keys = keys  # seals personal fields on the way to the log, reveals them back
        self._cache: OrderedDict[str, tuple[S, int]] = OrderedDict()
        self._turns = Turns()

    def turn(self, subject: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold ``subject``'s turn, e.g. to check a rule against a state no writer is changing."""
        return self._turns.hold(subject)

    async def load(self, subject: str, *, fresh: bool = False) -> tuple[S, int]:
        """The state of ``subject`` and its version; ``fresh`` catches up from the log first."""
        cached = self._cache.get(subject)
        if cached is not None and not fresh:
            self._cache.move_to_end(subject)
            return cached
        state, version = cached if cached is not None else (self.decider.initial(), 0)
        evolve, stored, keys = self.decider.evolve, self.decider.stored, self.keys
        async for envelope in self.log.read(subject, version):
            event = envelope.event
            if keys is not None:
                event = await keys.reveal(envelope.workspace, event)
            state = evolve(state, event)
            if stored is not None:
                stored(state, event, envelope.seq)
            version = envelope.seq
        self._remember(subject, state, version)
        return state, version

    async def read(self, subject: str, after: int = 0, limit: int = 0) -> AsyncIterator[Envelope]:
        """The stored events of ``subject`` after ``after`` (at most ``limit``), revealed."""
        events = self.log.read(subject, after, limit)
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for envelope in events:
                if self.keys is not None:
                    revealed = await self.keys.reveal(envelope.workspace, envelope.event)
                    if revealed is not envelope.event:
                        envelope = msgspec.structs.replace(envelope, event=revealed)
                yield envelope

    async def query(self, subject: str, ask: Callable[[S], T]) -> T:
        """``ask`` the state (Equinox's ``Query``); a rejection on a cached state is asked
        once more of the log's."""
        async with self._turns.hold(subject):
            cached = subject in self._cache
            state, _ = await self.load(subject)
            try:
                return ask(state)
            except ConfabError:
                if not cached:
                    raise
            state, _ = await self.load(subject, fresh=True)
            return ask(state)

    async def execute(
        self,
        subject: str,
        command: C,
        *,
        msg_id: str,
        workspace: str,
        actor: str = "",
        correlation: str = "",
    ) -> Executed[S]:
        """Decide ``command`` on the current state of ``subject`` and append what it decides;
        ``decide`` may raise a ``ConfabError``, which reaches the caller."""
        async with self._turns.hold(subject):
            cached = subject in self._cache
            state, version = await self.load(subject)
            for attempt in range(MAX_ATTEMPTS):
                decision: Decision[Any] | None
                try:
                    decision = self.decider.decide(command, state)
                except ConfabError:
                    if not cached:
                        raise
                    decision = None
                if decision is None or not decision.events:
                    if cached:
                        cached = False
                        state, version = await self.load(subject, fresh=True)
                        continue
                    assert decision is not None  # not cached: a rejection was raised
                    return Executed(state, version, decision.result)
                try:
                    return await self._append(
                        subject,
                        state,
                        version,
                        decision,
                        msg_id=msg_id,
                        workspace=workspace,
                        actor=actor,
                        correlation=correlation,
                    )
                except WrongExpectedVersion:
                    # Another process got there first: back off, catch up, decide again.
                    await asyncio.sleep(random.uniform(0, BACKOFF_SECONDS * 2 ** min(attempt, 6)))
                    cached = False
                    state, version = await self.load(subject, fresh=True)
            raise Conflict("Too many concurrent changes to the same thing; try again.")

    async def _append(
        self,
        subject: str,
        state: S,
        version: int,
        decision: Decision[Any],
        *,
        msg_id: str,
        workspace: str,
        actor: str,
        correlation: str,
    ) -> Executed[S]:
        evolve, stored = self.decider.evolve, self.decider.stored
        positions: tuple[int, ...] = ()
        for index, event in enumerate(decision.events):
            sealed = event if self.keys is None else await self.keys.seal(workspace, event)
            appended = await self.log.append(
                subject,
                sealed,
                msg_id=msg_id if index == 0 else f"{msg_id}/{index + 1}",
                workspace=workspace,
                actor=actor,
                correlation=correlation,
                expected_version=version,
            )
            positions = (*positions, appended.seq)
            if appended.duplicate:
                # Stored by an earlier attempt: the log, not this decision, is the truth.
                state, version = await self.load(subject, fresh=True)
                return Executed(state, version, decision.result, decision.events, positions, True)
            state = evolve(state, event)
            if stored is not None:
                stored(state, event, appended.seq)
            version = appended.seq
            self._remember(subject, state, version)
        return Executed(state, version, decision.result, decision.events, positions)

    def forget(self, subject: str) -> None:
        self._cache.pop(subject, None)

    async def refresh(self, subject: str) -> None:
        """Catch ``subject``'s cached state up with the log; nothing if it is not cached
        (its next ``load`` reads the log anyway). For a process that follows a subject's
        changes and answers from the cache (``confab.authority.Watch``)."""
        if subject in self._cache:
            await self.load(subject, fresh=True)

    def _remember(self, subject: str, state: S, version: int) -> None:
        cached = self._cache.get(subject)
        if cached is not None and cached[1] > version:
            return  # a read that started earlier ended later: the newer state stays
        self._cache[subject] = (state, version)
        self._cache.move_to_end(subject)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
