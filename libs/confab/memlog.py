"""An event log in memory, with the promises of the JetStream one, for fast tests.

``MemoryLog`` implements ``confab.eventlog.EventLog`` the way one JetStream
stream behaves for the write side, so command handling (``confab.aggregate``
and the services' deciders) can be tested in milliseconds, without a server:

- each append takes the next stream sequence (1, 2, 3, … over all subjects);
- ``expected_version`` is the sequence of the subject's last event (0: the
  subject must be empty; None: no check); a stale one raises
  ``WrongExpectedVersion`` and stores nothing;
- a message id stored within ``duplicate_window`` seconds stores nothing and
  answers ``duplicate`` with the sequence stored then, whatever the expected
  version says (as a clustered JetStream does; a single server checks the
  version first and ``eventlog.append`` then finds the id on the subject's
  last message: the same answer whenever the retry is the last writer);
- events are kept as JetStream keeps them, encoded with their headers, and
  decoded (and upcast) on every read, so a reader never shares an object with
  the writer and a schema mistake shows up here as it would against the server.

It is not a stream: nothing is republished, nothing is trimmed, and it lives
as long as the object. Appends and reads take no lock: in one event loop an
append is a single step (it never awaits).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from confab.contracts.events import Event
from confab.eventlog import Appended, WrongExpectedVersion
from confab.events import Envelope, encode, headers_for, open_envelope

DUPLICATE_WINDOW = 120.0  # seconds, as the platform's streams


@dataclass(frozen=True, slots=True)
class _Stored:
    subject: str
    seq: int
    subject_seq: int  # the previous sequence on the same subject (0: the first)
    headers: dict[str, str]
    body: bytes
    time: datetime


class MemoryLog:
    """One stream in memory (``confab.eventlog.EventLog``)."""

    def __init__(
        self,
        stream: str = "MEMORY",
        *,
        duplicate_window: float = DUPLICATE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.duplicate_window = duplicate_window
        self.clock = clock
        self._messages: list[_Stored] = []
        self._by_subject: dict[str, list[int]] = {}  # subject -> its sequences, in order
        self._msg_ids: dict[str, tuple[int, float]] = {}  # msg id -> (seq, stored at)
        # What a test counts round trips by: appends tried (stored or not), reads begun.
        self.appends = 0
        self.reads = 0

    async def append(
        self,
        subject: str,
        event: Event,
        *,
        msg_id: str,
        workspace: str,
        actor: str = "",
        correlation: str = "",
        expected_version: int | None = None,
    ) -> Appended:
        self.appends += 1
        now = self.clock()
        seen = self._msg_ids.get(msg_id)
        if seen is not None and now - seen[1] <= self.duplicate_window:
            return Appended(seq=seen[0], duplicate=True)
        sequences = self._by_subject.get(subject)
        last = sequences[-1] if sequences else 0
        if expected_version is not None and expected_version != last:
            raise WrongExpectedVersion(subject, expected_version)
        headers = headers_for(
            event, msg_id=msg_id, workspace=workspace, actor=actor, correlation=correlation
        )
        seq = len(self._messages) + 1
        self._messages.append(
            _Stored(subject, seq, last, headers, encode(event), datetime.now(UTC))
        )
        self._by_subject.setdefault(subject, []).append(seq)
        self._msg_ids[msg_id] = (seq, now)
        return Appended(seq=seq, duplicate=False)

    async def read(self, subject: str, after: int = 0, limit: int = 0) -> AsyncIterator[Envelope]:
        self.reads += 1
        count = 0
        for seq in list(self._by_subject.get(subject, ())):
            if seq <= after:
                continue
            yield self.envelope(seq)
            count += 1
            if count == limit:
                return

    async def last_version(self, subject: str) -> int:
        sequences = self._by_subject.get(subject)
        return sequences[-1] if sequences else 0

    # -- for tests --------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The stream's last sequence (0: empty)."""
        return len(self._messages)

    def envelope(self, seq: int) -> Envelope:
        """The stored event at ``seq``, decoded as a reader of the stream sees it."""
        stored = self._messages[seq - 1]
        return open_envelope(
            stored.headers,
            stored.body,
            subject=stored.subject,
            seq=stored.seq,
            subject_seq=stored.subject_seq,
            time=stored.time,
        )

    def events(self, subject: str | None = None) -> list[Event]:
        """Every stored event (of ``subject``), in order."""
        return [
            self.envelope(s.seq).event
            for s in self._messages
            if subject is None or s.subject == subject
        ]
