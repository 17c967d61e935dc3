"""Replay: rebuild the messaging read model from a large log, as ``confab projections rebuild``.

Fresh embedded NATS and PostgreSQL (no services: nothing else competes for the
two cores). The log is written directly: users in ``IDENTITY``, and in
``CONVERSATIONS`` conversations of 100 events each (posts, reactions, read
marks, edits), 200 of them active at a time and interleaved at random, as
real traffic is. Then the rebuild runs in this process — replay into the
scratch schema and swap — and reports events/s, the CPU seconds of this
process and of PostgreSQL, and peak memory.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confab import bus
from confab.bench.measure import ProcessMeter
from confab.contracts.base import Event
from confab.contracts.identity import UserUpserted
from confab.contracts.identity import subject as identity_subject
from confab.contracts.messaging import (
    ConversationCreated,
    MessageEdited,
    MessagePosted,
    ReactionAdded,
    ReactionRemoved,
    ReadMarked,
)
from confab.contracts.messaging import subject as conversation_subject
from confab.db import create_engine
from confab.events import encode, headers_for
from confab.readmodels import find
from confab.rebuild import Progress, ReadModelRebuild
from confab.streamread import speed_up

EVENTS_PER_CONVERSATION = 100
ACTIVE = 200
USERS = 2000
WINDOW = 2000


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
    return {"users": USERS, "conversations": started, "conversation_events": written}


async def _rebuild(
    nats_url: str, database_url: str, batch_size: int, pids: dict[str, int]
) -> dict[str, Any]:
    nc = await bus.connect(nats_url, "bench-replay")
    speed_up(nc)  # as the command line does
    engine = create_engine(database_url, pool_size=4)
    try:
        job = ReadModelRebuild(nc.jetstream(), engine, find("messaging"), batch_size=batch_size)
        progress = Progress()
        async with job.exclusive():
            await job.drop_scratch()
            await job.prepare()
            # Measured while the connections live: PostgreSQL's backends are counted
            # before they exit.
            with ProcessMeter(pids, alone=("rebuild", "nats")) as meter:
                started = time.perf_counter()
                await job.converge(progress)
                replayed = time.perf_counter() - started
                swapped = await job.swap(progress)
        return {
            "events": progress.done,
            "replay_seconds": round(replayed, 2),
            "events_per_s": round(progress.done / replayed, 1),
            "swap_pause_ms": round(swapped.paused_seconds * 1000, 1),
            "checkpoints": swapped.checkpoints,
            "processes": meter.report(progress.done, "event"),
        }
    finally:
        await engine.dispose()
        await nc.close()


def run(events: int = 1_000_000, batch_size: int = 2000) -> dict[str, Any]:
    from confab_infra.nats import EmbeddedNats
    from confab_infra.postgres import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="confab-bench-replay-") as tmp:
        data = Path(tmp)
        nats, postgres = EmbeddedNats(data), EmbeddedPostgres(data)
        nats_url, database_url = nats.start(), postgres.start()
        try:

            async def fill() -> dict[str, int]:
                nc = await bus.connect(nats_url, "bench-populate")
                try:
                    js = nc.jetstream()
                    await bus.ensure_streams(js, bus.STREAMS.values())
                    return await populate(js, events)
                finally:
                    await nc.close()

            started = time.perf_counter()
            written = asyncio.run(fill())
            populate_seconds = time.perf_counter() - started
            pids = {"rebuild": os.getpid(), "postgres": postgres.pid, "nats": nats.pid}
            load_before = os.getloadavg()[0]  # other work on the machine skews the rate
            result = asyncio.run(_rebuild(nats_url, database_url, batch_size, pids))
        finally:
            nats.stop()
            postgres.stop()
    return {
        "scenario": "replay",
        "load": (
            f"rebuild of the messaging read model from {result['events']:,} events "
            f"({written['conversations']:,} conversations, {written['users']:,} users), "
            f"batches of {batch_size}"
        ),
        "populate_seconds": round(populate_seconds, 1),
        "load_average_before": round(load_before, 2),
        **result,
    }


def print_result(r: dict[str, Any]) -> None:
    print(f"\n{r['scenario']}: {r['load']}")
    print(
        f"  throughput {r['events_per_s']:>10,.1f} events/s   {r['events']:,} events in "
        f"{r['replay_seconds']} s   swap paused live projections {r['swap_pause_ms']} ms"
    )
    print(f"  load average of the machine before the run: {r['load_average_before']}")
    print(f"  {'process':<16}{'CPU s':>8}{'CPU ms/event':>14}{'cores':>7}{'peak RSS MB':>13}")
    for name, p in r["processes"].items():
        print(
            f"  {name:<16}{p['cpu_seconds']:>8.2f}{p['cpu_ms_per_event']:>14.4f}"
            f"{p['cpu_share']:>7.2f}{p['peak_rss_mb']:>13.1f}"
        )
