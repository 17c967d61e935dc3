"""Running a decider against the event log: load, decide, append, retry on conflict.

States are cached in process by subject with the version they were built at.
A command is decided on the cached state and appended with that version as
the expected one; only when another writer got there first do we catch up
from the log and decide again. So a busy aggregate costs no read per command,
and a cold one is loaded once.

Writers of one aggregate in one process take turns: racing each other to the
log would only make all but one lose. Only other processes can make an append
lose, and a loser backs off a little (with jitter) before trying again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from confab.contracts.base import Event
from confab.errors import ConfabError, Conflict
from confab.eventlog import Appended, WrongExpectedVersion, append, read_subject
from confab.personal import KeyRing

S = TypeVar("S")

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


@dataclass(frozen=True, slots=True)
class Decision(Generic[S]):
    """What a command did: the state after it, and where its event was stored (if any)."""

    state: S
    version: int
    appended: Appended | None
    event: Event | None


class Aggregates(Generic[S]):
    """One kind of aggregate in one stream, with its evolve function and a bounded cache."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        stream: str,
        initial: Callable[[], S],
        evolve: Callable[[S, Event], S],
        *,
        cache_size: int = 50_000,
        keys: KeyRing | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.stream = stream
        self.initial = initial
        self.evolve = evolve
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
        state, version = cached if cached is not None else (self.initial(), 0)
        async for envelope in read_subject(self.nc, self.stream, subject, after=version):
            event = envelope.event
            if self.keys is not None:
                event = await self.keys.reveal(envelope.workspace, event)
            state = self.evolve(state, event)
            version = envelope.seq
        self._remember(subject, state, version)
        return state, version

    async def execute(
        self,
        subject: str,
        decide: Callable[[S], Event | None],
        *,
        msg_id: str,
        workspace: str,
        actor: str = "",
        correlation: str = "",
    ) -> Decision[S]:
        """Decide on the current state and append the event; ``decide`` may raise ConfabError.

        A rejection or a no-op decided on a cached state is checked once more
        against the log: another process may have changed the aggregate.
        """
        async with self._turns.hold(subject):
            return await self._execute(
                subject,
                decide,
                msg_id=msg_id,
                workspace=workspace,
                actor=actor,
                correlation=correlation,
            )

    async def _execute(
        self,
        subject: str,
        decide: Callable[[S], Event | None],
        *,
        msg_id: str,
        workspace: str,
        actor: str,
        correlation: str,
    ) -> Decision[S]:
        cached = subject in self._cache
        state, version = await self.load(subject)
        for attempt in range(MAX_ATTEMPTS):
            try:
                event = decide(state)
            except ConfabError:
                if not cached:
                    raise
                event = None
            if event is None:
                if cached:
                    cached = False
                    state, version = await self.load(subject, fresh=True)
                    continue
                return Decision(state, version, None, None)
            stored = event if self.keys is None else await self.keys.seal(workspace, event)
            try:
                appended = await append(
                    self.js,
                    self.stream,
                    subject,
                    stored,
                    msg_id=msg_id,
                    workspace=workspace,
                    actor=actor,
                    correlation=correlation,
                    expected_version=version,
                )
            except WrongExpectedVersion:
                # Another process got there first: back off, catch up, decide again.
                await asyncio.sleep(random.uniform(0, BACKOFF_SECONDS * 2 ** min(attempt, 6)))
                cached = False
                state, version = await self.load(subject, fresh=True)
                continue
            if appended.duplicate:
                # Stored by an earlier attempt: the log, not this decision, is the truth.
                state, version = await self.load(subject, fresh=True)
                return Decision(state, version, appended, event)
            state = self.evolve(state, event)
            self._remember(subject, state, appended.seq)
            return Decision(state, appended.seq, appended, event)
        raise Conflict("Too many concurrent changes to the same thing; try again.")

    def forget(self, subject: str) -> None:
        self._cache.pop(subject, None)

    def _remember(self, subject: str, state: S, version: int) -> None:
        self._cache[subject] = (state, version)
        self._cache.move_to_end(subject)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
