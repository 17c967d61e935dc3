"""What the webhooks intake's insert of delivery rows costs, per row: in the client (the
webhooks process: binding and encoding the arrays) and in PostgreSQL (its backend).

    .venv/bin/python bench/intake-insert.py [--against REV] [--batches N]

On a PostgreSQL of its own (embedded, in a temporary directory), batches of 290 events
for 3 endpoints each (870 rows, the size the intake wrote under `confab bench webhooks`),
every delivery delivered at its first attempt, as most are, the answers coming in over
the batch's first 44 milliseconds (about 20 to a millisecond). With ``--against REV`` the
statement of that revision (``confab_webhooks/projections.py`` as ``git show`` gives it)
runs too, its batches alternating with the current one's, so both see the same minute
of the machine. CPU is read from ``/proc``: the process's own, and the backend's by
``pg_backend_pid()``. The first 4 batches of each are not counted (warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from confab.db import create_tables
from confab_infra.postgres import EmbeddedPostgres
from confab_webhooks import projections
from confab_webhooks.store import DELIVERIES, ENDPOINTS, METADATA

EVENTS, ENDPOINT_COUNT, WARM_UP = 290, 3, 4
PATH = "services/webhooks/confab_webhooks/projections.py"
_json = msgspec.json.Encoder()

Rows = tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]]
Insert = Callable[[AsyncConnection, Rows], Any]


def module_at(rev: str) -> ModuleType:
    """``projections`` as it was at ``rev``."""
    text = subprocess.run(
        ["git", "show", f"{rev}:{PATH}"], capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "projections_then.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("projections_then", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Batches:
    """Events and their delivery rows, fresh ids and sequences for every batch."""

    def __init__(self) -> None:
        self.seq = 0
        self.id = 0

    def __call__(self) -> Rows:
        now = datetime.now(UTC)
        events, rows, event_of = [], [], []
        for i in range(EVENTS):
            self.seq += 1
            events.append(
                {
                    "workspace_id": "ws_1",
                    "part": i % 8,
                    "lane": f"c_{i % 50}",
                    "seq": self.seq,
                    "event_type": "message.created",
                    "conversation_id": f"c_{i % 50}",
                    "event_seq": self.seq,
                    "ref": {"id": f"m_{self.seq}", "sender_id": "u_1", "at": now.isoformat()},
                    "stored_at": now,
                }
            )
            for k in range(ENDPOINT_COUNT):
                self.id += 1
                rows.append(
                    {
                        **events[-1],
                        "id": self.id,
                        "endpoint_id": f"ep_{k}",
                        "source": "conversations",
                        "stream": "CONVERSATIONS",
                        "status": "delivered",
                        "attempts": 1,
                        "last_status": 200,
                        "last_error": None,
                        "last_attempt_at": now,
                        "next_attempt_at": None,
                        "delivered_at": now,
                    }
                )
                event_of.append(len(events))
        # Answers come in over the batch's first attempts: about 20 to a millisecond.
        for i, row in enumerate(rows):
            row["last_attempt_at"] = row["delivered_at"] = now + timedelta(milliseconds=i // 20)
        return events, rows, event_of


def current(module: ModuleType) -> Insert:
    """The statement with each event's columns once (this revision's), as the intake
    runs it: without ``ON CONFLICT`` where the revision has that form (``again``)."""
    plain = "again" in inspect.signature(module._queue_statement).parameters
    statement = module._queue_statement(
        DELIVERIES, ENDPOINTS, **({"again": False} if plain else {})
    )

    async def insert(conn: AsyncConnection, batch: Rows) -> Any:
        events, rows, event_of = batch
        params: dict[str, Any] = {
            f"e_{c}": [e[c] for e in events] for c in module.PER_EVENT if c != "ref"
        }
        params["e_ref"] = [_json.encode(e["ref"]).decode() for e in events]
        params.update({f"d_{c}": [r[c] for r in rows] for c in module.PER_DELIVERY})
        params.update(d_event=event_of, source="conversations", stream="CONVERSATIONS")
        if hasattr(module, "PER_OUTCOME"):  # each distinct outcome once (since e844c1f)
            outcomes: dict[tuple[Any, ...], int] = {}
            places = []
            for r in rows:
                outcome = tuple(r[c] for c in module.PER_OUTCOME)
                places.append(outcomes.setdefault(outcome, len(outcomes) + 1))
            params["d_outcome"] = places
            columns = zip(*outcomes, strict=True)
            params.update(
                {f"o_{c}": list(v) for c, v in zip(module.PER_OUTCOME, columns, strict=True)}
            )
        return (await conn.execute(statement, params)).rowcount

    return insert


def per_row(module: ModuleType) -> Insert:
    """The statement with every column of every row (before 503d48c)."""
    statement = module._queue_statement(DELIVERIES, ENDPOINTS)

    async def insert(conn: AsyncConnection, batch: Rows) -> Any:
        events, rows, _ = batch
        refs = [_json.encode(e["ref"]).decode() for e in events for _ in range(ENDPOINT_COUNT)]
        params: dict[str, Any] = {c: [r[c] for r in rows] for c in module.QUEUED if c != "ref"}
        params["ref"] = refs
        return set((await conn.execute(statement, params)).scalars().all())

    return insert


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(args: argparse.Namespace) -> None:
    inserts = {"current": current(projections)}
    if args.against:
        then = module_at(args.against)
        inserts[args.against] = current(then) if hasattr(then, "PER_EVENT") else per_row(then)
    data = Path(tempfile.mkdtemp())
    postgres = EmbeddedPostgres(data)
    url = postgres.start().replace("postgresql://", "postgresql+asyncpg://")
    engine = create_async_engine(url)
    try:
        await create_tables(engine, METADATA)
        batches = Batches()
        spent = {name: [0.0, 0.0, 0] for name in inserts}
        async with engine.connect() as conn:
            backend = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
            await conn.commit()
            for n in range(args.batches):
                order = list(inserts.items())
                for name, insert in order if n % 2 == 0 else reversed(order):
                    batch = batches()
                    client, server = time.process_time(), cpu_of(backend)
                    await insert(conn, batch)
                    await conn.commit()
                    if n >= WARM_UP:
                        spent[name][0] += time.process_time() - client
                        spent[name][1] += cpu_of(backend) - server
                        spent[name][2] += len(batch[1])
        for name, (client, server, rows) in spent.items():
            print(
                f"{name}: client {1e6 * client / rows:.2f} µs per row, "
                f"PostgreSQL {1e6 * server / rows:.2f} µs per row ({rows} rows)"
            )
    finally:
        await engine.dispose()
        postgres.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", help="a revision whose statement runs too")
    parser.add_argument("--batches", type=int, default=40)
    asyncio.run(main(parser.parse_args(sys.argv[1:])))
