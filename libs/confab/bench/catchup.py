"""Catch-up: the live conversations projection working through a backlog, in one process and
in two sharing its partitions (projection scale-out).

Fresh embedded NATS and PostgreSQL, and the log ``replay`` writes (users, and
conversations of 100 events interleaved). Then, for each number of copies, a
fresh database and that many OS processes (``python -m confab.bench.catchup``),
each running a ``ProjectionRunner`` for messaging's ``ConversationsProjection``
as the messaging service does (same batch size and pool). Only that projection
runs: it reads nothing of the users', and it is the partitioned one.

The workers import and connect first; the clock starts when they are all told to
start their runners, and stops when the projection's own checkpoint row reaches
the stream's last sequence. What runners do at start — create tables, count the
live processes, take partitions, create consumers — is inside the measured time,
and so is the rebalance of a real start: a process that joins finds the
partitions already taken, and gets its share when the other gives it back at its
next balance (each ``BALANCE_INTERVAL``, 1 s). When the fair share was first in
place is recorded (``fair_share_after_s``), with the share at the end.

Reported per run: events/s, the interval between batches committed by any
process (the latency percentiles, from the checkpoint notifications), CPU
seconds and peak memory of each worker, PostgreSQL (with its backends) and
NATS. Every event must be applied exactly once (the workers' counts add up to
the events written), and ``messages`` must hold exactly the messages posted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg
import sqlalchemy as sa

from confab import bus
from confab.bench.measure import Latencies, ProcessMeter
from confab.bench.replay import fresh_backends, write_log
from confab.bench.result import add_error, counted, run_record, scenario_result
from confab.db import create_engine, plain_url
from confab.logging import configure
from confab.projection import (
    NOTIFY_CHANNEL,
    Projection,
    ProjectionRunner,
    partition_holders,
)
from confab.readmodels import find

DEFAULT_EVENTS = 150_000
COPIES = (1, 2)
PROJECTION = "messaging.conversations"
# The messaging service's defaults: ``projection_batch_size`` and ``database_pool_size``.
BATCH_SIZE = 512
POOL_SIZE = 10
READY_TIMEOUT = 60.0
SETTLE_TIMEOUT = 10.0  # a few balance intervals


def conversations_projection() -> Projection:
    """Messaging's conversations projection on its live schema, found by entry point."""
    projections = find("messaging").projections()
    return next(p for p in projections if p.name == PROJECTION)


# -- the worker process -----------------------------------------------------------------------


async def _worker(nats_url: str, database_url: str, batch_size: int, files: Path) -> None:
    """Connect, say ready, run the projection from "go" to "stop", write what it applied."""
    nc = await bus.connect(nats_url, f"bench-catchup-{os.getpid()}")
    engine = create_engine(database_url, POOL_SIZE)
    projection = conversations_projection()
    runner = ProjectionRunner(
        nc.jetstream(), engine, database_url, projection, batch_size=batch_size
    )
    loop = asyncio.get_running_loop()
    try:
        files.with_suffix(".ready").touch()
        if (await loop.run_in_executor(None, sys.stdin.readline)).strip() != "go":
            return
        await runner.start()
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop", or the parent is gone
        await runner.stop()
        result = {"applied": runner.applied, "last_error": runner.last_error}
        files.with_suffix(".json").write_text(json.dumps(result))
    finally:
        await engine.dispose()
        await nc.close()


@dataclass(frozen=True)
class Backlog:
    """The log written once, and what every run needs to work through it."""

    nats_url: str
    admin_url: str  # the database the runs' own databases are created from
    backend_pids: dict[str, int]
    written: dict[str, int]  # what ``populate`` wrote
    last_seq: int  # of the conversations stream: where the checkpoint must get to
    batch_size: int
    files: Path  # the workers' ready markers, results and logs


@dataclass
class Worker:
    """One projection process, driven through its stdin; it reports through files."""

    name: str
    proc: subprocess.Popen[bytes]
    files: Path  # <dir>/<name>: .ready, .json and .log next to it

    @classmethod
    def spawn(cls, name: str, backlog: Backlog, database_url: str) -> Worker:
        files = backlog.files / name.replace(" ", "-")
        command = [sys.executable, "-m", "confab.bench.catchup", backlog.nats_url, database_url]
        with open(files.with_suffix(".log"), "wb") as log:
            proc = subprocess.Popen(
                [*command, str(backlog.batch_size), str(files)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(name, proc, files)

    def tell(self, line: str) -> None:
        stdin: IO[bytes] | None = self.proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                stdin.write(line.encode() + b"\n")
                stdin.flush()

    def failed(self) -> str | None:
        """Why the process exited early (the tail of its log), or None while it runs."""
        if self.proc.poll() is None:
            return None
        tail = self.files.with_suffix(".log").read_text(errors="replace")[-2000:]
        return f"{self.name} exited with status {self.proc.returncode}:\n{tail}"

    def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        """Stop the runner (it commits the batch in hand) and read what it applied."""
        self.tell("stop")
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"{self.name} did not stop within {timeout:.0f} s") from None
        result = self.files.with_suffix(".json")
        if not result.exists():
            raise RuntimeError(self.failed() or f"{self.name} wrote no result")
        return dict(json.loads(result.read_text()))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _wait_ready(workers: list[Worker]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not all(w.files.with_suffix(".ready").exists() for w in workers):
        for w in workers:
            if (why := w.failed()) is not None:
                raise RuntimeError(why)
        if time.monotonic() > deadline:
            raise RuntimeError(f"catch-up workers not ready within {READY_TIMEOUT:.0f} s")
        time.sleep(0.02)  # polling files the workers create


def fair_share(holders: list[int], partitions: int, copies: int) -> bool:
    """Every process holds some partitions, all are held, and none holds more than its share."""
    share = -(-partitions // copies)
    return len(holders) == copies and sum(holders) == partitions and max(holders) <= share


# -- one measured run ---------------------------------------------------------------------------


async def _fresh_database(admin_url: str, name: str) -> str:
    """A new, empty database; its URL."""
    conn = await asyncpg.connect(plain_url(admin_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def _drop_consumers(nats_url: str) -> None:
    """The consumers the workers left behind, so that the next run starts with none."""
    nc = await bus.connect(nats_url, "bench-catchup-cleanup")
    try:
        js = nc.jetstream()
        for info in await js.consumers_info(bus.CONVERSATIONS.name):
            await js.delete_consumer(bus.CONVERSATIONS.name, info.name)
    finally:
        await nc.close()


async def _stream_last_seq(nats_url: str) -> int:
    nc = await bus.connect(nats_url, "bench-catchup-info")
    try:
        info = await nc.jetstream().stream_info(bus.CONVERSATIONS.name)
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def _watch(
    database_url: str, workers: list[Worker], pids: dict[str, int], last_seq: int, timeout: float
) -> dict[str, Any]:
    """Start the workers, and measure until the projection's checkpoint is at ``last_seq``."""
    projection = conversations_projection()
    engine = create_engine(database_url, pool_size=2)
    listener = await asyncpg.connect(plain_url(database_url))
    commits: list[float] = []
    reached = asyncio.Event()

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        name, _, seq = payload.rpartition(":")
        if name == projection.name:  # every batch committed notifies, moved or not
            commits.append(time.perf_counter())
            if int(seq) >= last_seq:
                reached.set()

    await listener.add_listener(NOTIFY_CHANNEL, on_notify)
    fair_after: float | None = None
    try:
        with ProcessMeter(pids, alone=(*(w.name for w in workers), "nats")) as meter:
            started = time.perf_counter()
            for w in workers:
                w.tell("go")
            while not reached.is_set():
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"catch-up not done within {timeout:.0f} s")
                for w in workers:
                    if (why := w.failed()) is not None:
                        raise RuntimeError(why)
                if fair_after is None:
                    async with engine.connect() as conn:
                        held = await partition_holders(conn, projection)
                        if fair_share(held, projection.partitions, len(workers)):
                            fair_after = time.perf_counter() - started
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reached.wait(), 0.1)
            seconds = time.perf_counter() - started
        async with engine.connect() as conn:
            at_end = holders = await partition_holders(conn, projection)
        # A short backlog can be done while a partition moves between processes:
        # how they share once settled is read after the clock stopped.
        settle = time.monotonic() + SETTLE_TIMEOUT
        while not fair_share(holders, projection.partitions, len(workers)):
            if time.monotonic() > settle:
                break  # reported as found: not a fair share
            await asyncio.sleep(0.1)  # polling the locks until the deadline
            async with engine.connect() as conn:
                holders = await partition_holders(conn, projection)
        table = projection.checkpoints
        schema = projection.metadata.schema
        async with engine.connect() as conn:
            checkpoint = (
                await conn.execute(
                    sa.select(table.c.last_seq).where(table.c.name == projection.name)
                )
            ).scalar_one()
            stored, distinct = (
                await conn.execute(
                    sa.text(f'SELECT count(*), count(DISTINCT id) FROM "{schema}".messages')
                )
            ).one()
    finally:
        await listener.close()
        await engine.dispose()
    latencies = Latencies()
    for before, after in zip([started, *commits], commits, strict=False):
        latencies.add(after - before)
    return {
        "seconds": seconds,
        "meter": meter,
        "latencies": latencies,
        "holders": holders,
        "holders_at_end": at_end,
        "partitions": projection.partitions,
        "fair_after": fair_after,
        "checkpoint": int(checkpoint),
        "messages_stored": int(stored),
        "messages_distinct": int(distinct),
    }


def _one_run(copies: int, backlog: Backlog) -> dict[str, Any]:
    database_url = asyncio.run(_fresh_database(backlog.admin_url, f"catchup_{copies}"))
    written, last_seq, batch_size = backlog.written, backlog.last_seq, backlog.batch_size
    names = [f"projection {i + 1}" for i in range(copies)]
    workers: list[Worker] = []
    try:
        for name in names:
            workers.append(Worker.spawn(name, backlog, database_url))
        _wait_ready(workers)
        load_before = os.getloadavg()[0]  # other work on the machine skews the rate
        pids = {**{w.name: w.proc.pid for w in workers}, **backlog.backend_pids}
        timeout = 120.0 + last_seq / 500
        seen = asyncio.run(_watch(database_url, workers, pids, last_seq, timeout))
        results = [w.finish() for w in workers]
    finally:
        for w in workers:
            w.kill()
    asyncio.run(_drop_consumers(backlog.nats_url))
    events = written["conversation_events"]
    applied = [int(r["applied"]) for r in results]
    errors: dict[str, int] = {}
    for r in results:
        if r["last_error"]:  # the runner's latest batch or connection failed
            add_error(errors, f"projection: {r['last_error']}")
    # Each event applied by exactly one process, once; each message stored once.
    loss = counted({"events": events}, {"events": sum(applied)})
    loss["lost"] += max(0, written["messages"] - seen["messages_distinct"])
    loss["duplicates"] += seen["messages_stored"] - seen["messages_distinct"]
    loss["duplicates"] += max(0, seen["messages_distinct"] - written["messages"])
    seconds = seen["seconds"]
    fair_after = seen["fair_after"]
    record = run_record(
        f"{copies} {'copy' if copies == 1 else 'copies'}",
        f"live {PROJECTION} projection catching up on {events:,} conversation events "
        f"({written['conversations']:,} conversations) in "
        + (
            f"1 process holding all {seen['partitions']} partitions"
            if copies == 1
            else f"{copies} processes sharing its {seen['partitions']} partitions"
        )
        + f", batches of {batch_size}",
        unit="event",
        work=events,
        latencies=seen["latencies"],
        meter=seen["meter"],
        lag=None,
        loss=loss,
        errors=errors,
        seconds=seconds,
        generator_is="none: the backlog was written before the clock started",
        latency_is="interval between batches committed by any process",
        copies=copies,
        events_per_s=round(events / seconds, 1),
        partition_holders=seen["holders"],
        partition_holders_when_caught_up=seen["holders_at_end"],
        fair_share_after_s=None if fair_after is None else round(fair_after, 2),
        applied_per_process=applied,
        checkpoint=seen["checkpoint"],
        stream_last_seq=last_seq,
        messages_posted=written["messages"],
        messages_stored=seen["messages_stored"],
        load_average_before=round(load_before, 2),
    )
    # Nothing generates load while the clock runs: the projection's work is what is measured.
    record["generator_saturated"] = record["generator"]["saturated"] = False
    return record


def run(events: int = DEFAULT_EVENTS, batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    with fresh_backends("confab-bench-catchup-") as (nats, postgres):
        started = time.perf_counter()
        written = asyncio.run(write_log(nats.url, events))
        populate_seconds = time.perf_counter() - started
        last_seq = asyncio.run(_stream_last_seq(nats.url))
        with tempfile.TemporaryDirectory(prefix="confab-bench-catchup-workers-") as tmp:
            backlog = Backlog(
                nats_url=nats.url,
                admin_url=postgres.url,
                backend_pids={"postgres": postgres.pid or 0, "nats": nats.pid or 0},
                written=written,
                last_seq=last_seq,
                batch_size=batch_size,
                files=Path(tmp),
            )
            runs = [_one_run(copies, backlog) for copies in COPIES]
    for r in runs:
        r["populate_seconds"] = round(populate_seconds, 1)
    one, two = runs[0]["throughput_per_s"], runs[-1]["throughput_per_s"]
    speedup = round(two / one, 2) if one else None
    highlights = [
        f"{r['run']}: {r['events_per_s']:,.0f} events/s, partitions held "
        f"{r['partition_holders_when_caught_up']} when caught up, {r['partition_holders']} settled"
        + (
            f", fair share after {r['fair_share_after_s']} s"
            if r["fair_share_after_s"] is not None
            else ", fair share not reached before the end"
        )
        + f"; load average before {r['load_average_before']}"
        for r in runs
    ]
    highlights.append(f"speed-up with {COPIES[-1]} processes: {speedup}×")
    return scenario_result("catchup", runs, [], highlights=highlights, speedup=speedup)


def main() -> None:
    p = argparse.ArgumentParser(description="one projection process of confab bench catchup")
    p.add_argument("nats_url")
    p.add_argument("database_url")
    p.add_argument("batch_size", type=int)
    p.add_argument("files", type=Path, help="where to write <files>.ready and <files>.json")
    args = p.parse_args()
    configure("bench-catchup")
    asyncio.run(_worker(args.nats_url, args.database_url, args.batch_size, args.files))


if __name__ == "__main__":
    main()
