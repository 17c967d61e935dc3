"""Replay: rebuild the messaging read model from a large log, as ``confab projections rebuild``.

Fresh embedded NATS and PostgreSQL (no services: nothing else competes for the
two cores). The log is written directly: users in ``IDENTITY``, and in
``CONVERSATIONS`` conversations of 100 events each (posts, reactions, read
marks, edits), 200 of them active at a time and interleaved at random, as
real traffic is. Then the rebuild runs as ``confab projections rebuild`` does —
replay into the scratch schema, shared with ``PROCESSES - 1`` helper processes
(``confab.rebuild.Helpers``), and swap — and reports events/s, the interval
between batches committed by any process (the latency percentiles), the CPU
seconds of this process, each helper (measured by itself), PostgreSQL and NATS,
and peak memory. Every event written is counted as replayed once by
each projection of the read model that reads its stream (``CONVERSATIONS`` feeds
two: the conversations and the search index), and the rebuilt ``messages`` table
must hold exactly the messages posted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from confab import bus
from confab.bench.measure import Latencies, ProcessMeter
from confab.bench.result import counted, run_record, scenario_result, target
from confab.contracts.events import Event
from confab.contracts.events.identity import UserUpserted
from confab.contracts.events.identity import subject as identity_subject
from confab.contracts.events.messaging import (
    ConversationCreated,
    MessageEdited,
    MessagePosted,
    ReactionAdded,
    ReactionRemoved,
    ReadMarked,
)
from confab.contracts.events.messaging import subject as conversation_subject
from confab.db import create_engine
from confab.events import encode, headers_for
from confab.readmodels import find
from confab.rebuild import REBUILD_POOL, Helpers, Progress, ReadModelRebuild
from confab.streamread import speed_up

if TYPE_CHECKING:
    from confab_infra.nats import EmbeddedNats
    from confab_infra.postgres import EmbeddedPostgres

EVENTS_PER_CONVERSATION = 100
ACTIVE = 200
USERS = 2000
WINDOW = 2000
PROCESSES = min(2, os.cpu_count() or 1)  # as ``confab projections rebuild`` by default


class _Log:
    """Publishes with a window of acknowledgements in flight."""

    def __init__(self, js: Any) -> None:
        self.js = js
        self.pending: list[asyncio.Future[Any]] = []
        self.count = 0

    async def add(self, stream: str, subject: str, event: Event, workspace: str) -> None:
        self.count += 1
        msg_id = f"bench-{self.count}"
        headers = headers_for(event, msg_id=msg_id, workspace=workspace, actor="bench")
        self.pending.append(
            await self.js.publish_async(subject, encode(event), stream=stream, headers=headers)
        )
        if len(self.pending) >= WINDOW:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            await asyncio.wait_for(asyncio.gather(*self.pending), 60)
            self.pending.clear()


async def populate(js: Any, events: int, seed: int = 7) -> dict[str, int]:
    """Write ``events`` conversation events (and the users they name) to the log."""
    rng = random.Random(seed)
    log = _Log(js)
    workspace = "ws_bench"
    start = datetime(2025, 1, 1, tzinfo=UTC)
    users = [f"usr_bench{i:05d}" for i in range(USERS)]
    for i, user in enumerate(users):
        await log.add(
            bus.IDENTITY.name,
            identity_subject(workspace, "user", user),
            UserUpserted(
                workspace_id=workspace,
                user_id=user,
                external_id=f"ext-{i}",
                name=f"User {i}",
                created=True,
                at=start,
            ),
            workspace,
        )
    conversations = events // EVENTS_PER_CONVERSATION
    active: dict[str, dict[str, Any]] = {}
    started = 0
    written = 0
    posted = 0
    tick = 0
    while written < events:
        while len(active) < ACTIVE and started < conversations:
            cid = f"conv_bench{started:07d}"
            started += 1
            members = rng.sample(users, 3)
            active[cid] = {"seq": 0, "members": members, "messages": [], "left": 0}
            active[cid]["left"] = EVENTS_PER_CONVERSATION
        if not active:
            break
        cid = rng.choice(list(active))
        c = active[cid]
        c["seq"] += 1
        seq = c["seq"]
        tick += 1
        at = start + timedelta(milliseconds=tick)
        who = rng.choice(c["members"])
        roll = rng.random()
        event: Event
        if seq == 1:
            event = ConversationCreated(
                conversation_id=cid,
                seq=1,
                at=at,
                kind="group",
                title=f"Room {cid[-7:]}",
                participant_ids=c["members"],
            )
        elif not c["messages"] or roll < 0.80:
            mid = f"msg_{cid[5:]}_{seq:03d}"
            posted += 1
            c["messages"].append((mid, who))
            event = MessagePosted(
                conversation_id=cid,
                seq=seq,
                at=at,
                message_id=mid,
                sender_id=who,
                content=f"message {seq} in {cid}: " + "lorem ipsum " * rng.randint(1, 8),
            )
        elif roll < 0.88:
            mid, _ = rng.choice(c["messages"])
            event = ReactionAdded(
                conversation_id=cid, seq=seq, at=at, message_id=mid, emoji="👍", user_id=who
            )
        elif roll < 0.90:
            mid, _ = rng.choice(c["messages"])
            event = ReactionRemoved(
                conversation_id=cid, seq=seq, at=at, message_id=mid, emoji="👍", user_id=who
            )
        elif roll < 0.98:
            event = ReadMarked(conversation_id=cid, seq=seq, at=at, user_id=who, up_to=seq - 1)
        else:
            mid, author = rng.choice(c["messages"])
            event = MessageEdited(
                conversation_id=cid, seq=seq, at=at, message_id=mid, content="edited", by=author
            )
        subject = conversation_subject(workspace, cid)
        await log.add(bus.CONVERSATIONS.name, subject, event, workspace)
        written += 1
        c["left"] -= 1
        if c["left"] == 0:
            del active[cid]
    await log.flush()
    return {
        "users": USERS,
        "conversations": started,
        "conversation_events": written,
        "messages": posted,
    }


@contextlib.contextmanager
def fresh_backends(prefix: str) -> Iterator[tuple[EmbeddedNats, EmbeddedPostgres]]:
    """Embedded NATS and PostgreSQL on a temporary data directory, stopped and removed after."""
    from confab_infra.nats import EmbeddedNats
    from confab_infra.postgres import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        data = Path(tmp)
        nats, postgres = EmbeddedNats(data), EmbeddedPostgres(data)
        try:
            nats.start()
            postgres.start()
            yield nats, postgres
        finally:
            nats.stop()
            postgres.stop()


async def write_log(nats_url: str, events: int) -> dict[str, int]:
    """Declare the streams and write the log (``populate``) on a connection of its own."""
    nc = await bus.connect(nats_url, "bench-populate")
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js, bus.STREAMS.values())
        return await populate(js, events)
    finally:
        await nc.close()


class BatchTimes(Progress):
    """The rebuild's progress, timing the interval between batches committed."""

    def __init__(self) -> None:
        super().__init__()
        self.latencies = Latencies()
        self._last = time.perf_counter()

    def advance(self, n: int) -> None:
        now = time.perf_counter()
        self.latencies.add(now - self._last)
        self._last = now
        super().advance(n)


async def _rebuild(
    nats_url: str, database_url: str, batch_size: int, processes: int, pids: dict[str, int]
) -> dict[str, Any]:
    nc = await bus.connect(nats_url, "bench-replay")
    speed_up(nc)  # as the command line does
    engine = create_engine(database_url, pool_size=REBUILD_POOL)  # as the command line
    # As ``confab projections rebuild messaging --processes N`` starts its helpers.
    env = dict(os.environ, CONFAB_NATS_URL=nats_url, CONFAB_DATABASE_URL=database_url)
    argv = [sys.executable, "-m", "confab.cli.main", "projections", "rebuild", "messaging"]
    helpers = Helpers([*argv, "--batch-size", str(batch_size)], env, processes)
    try:
        job = ReadModelRebuild(nc.jetstream(), engine, find("messaging"), batch_size=batch_size)
        progress = BatchTimes()
        async with job.exclusive():
            await job.drop_scratch()
            await job.prepare()
            # Measured while the connections live: PostgreSQL's backends are counted
            # before they exit.
            with ProcessMeter(pids, alone=("rebuild", "nats")) as meter:
                started = time.perf_counter()
                progress._last = started
                await job.converge(progress, helpers=helpers)
                replayed = time.perf_counter() - started
                swapped = await job.swap(progress)
            # The helpers measured themselves (their whole life: start-up included).
            for n, report in enumerate(job.helper_reports, start=2):
                meter.add_reported(f"rebuild {n}", report["cpu_seconds"], report["peak_rss_mb"])
        async with engine.connect() as conn:
            messages = (
                await conn.execute(sa.text(f'SELECT count(*) FROM "{job.live_schema}".messages'))
            ).scalar_one()
        return {
            "events": progress.done,
            "replay_seconds": replayed,
            "swap_pause_ms": round(swapped.paused_seconds * 1000, 1),
            "checkpoints": swapped.checkpoints,
            "messages_stored": int(messages),
            "meter": meter,
            "latencies": progress.latencies,
        }
    finally:
        await engine.dispose()
        await nc.close()


def run(
    events: int = 1_000_000, batch_size: int = 2000, processes: int = PROCESSES
) -> dict[str, Any]:
    with fresh_backends("confab-bench-replay-") as (nats, postgres):
        started = time.perf_counter()
        written = asyncio.run(write_log(nats.url, events))
        populate_seconds = time.perf_counter() - started
        pids = {"rebuild": os.getpid(), "postgres": postgres.pid, "nats": nats.pid}
        load_before = os.getloadavg()[0]  # other work on the machine skews the rate
        result = asyncio.run(_rebuild(nats.url, postgres.url, batch_size, processes, pids))
    total = written["users"] + written["conversation_events"]
    # Each projection of the read model replays its stream's events.
    readers = Counter(p.stream for p in find("messaging").projections())
    applied = (
        written["users"] * readers[bus.IDENTITY.name]
        + written["conversation_events"] * readers[bus.CONVERSATIONS.name]
    )
    loss = counted({"events": applied}, {"events": result["events"]})
    # A message missing from (or twice in) the rebuilt table is lost (duplicated) too.
    loss["lost"] += max(0, written["messages"] - result["messages_stored"])
    loss["duplicates"] += max(0, result["messages_stored"] - written["messages"])
    record = run_record(
        f"{result['events']:,} events",
        f"rebuild of the messaging read model from {total:,} events "
        f"({written['conversations']:,} conversations, {written['users']:,} users), "
        f"batches of {batch_size}, {processes} process(es)",
        unit="event",
        work=result["events"],
        latencies=result["latencies"],
        meter=result["meter"],
        lag=None,
        loss=loss,
        errors={},
        seconds=result["replay_seconds"],
        generator_is="the rebuild itself (this process)",
        events_per_s=round(result["events"] / result["replay_seconds"], 1),
        swap_pause_ms=result["swap_pause_ms"],
        replay_processes=processes,
        checkpoints=result["checkpoints"],
        messages_posted=written["messages"],
        messages_stored=result["messages_stored"],
        populate_seconds=round(populate_seconds, 1),
        load_average_before=round(load_before, 2),
    )
    # The rebuild is the work measured, not a load generator that could distort it.
    record["generator_saturated"] = record["generator"]["saturated"] = False
    rate = record["throughput_per_s"]
    return scenario_result(
        "replay",
        [record],
        [target("projection rebuild (issue 22)", ">= 30,000 events/s", rate, rate >= 30_000)],
        highlights=[
            f"swap paused live projections {result['swap_pause_ms']} ms; "
            f"load average before the run {load_before:.2f}"
        ],
    )
