"""Faults under a steady load on the distributed topology (``confab up --cluster``).

Each test starts the load of `tests.faults.load` (senders retrying with their
``client_msg_id``, participants on Pusher sockets that reconnect and resume), breaks
one thing, repairs it, and checks: every acknowledged message is in the log exactly
once, in the read model and at every socket exactly once, and nothing acknowledged is
missing. The figures of each run go to docs/reliability.md (see the `record` fixture).
Waits are for progress (more acknowledgements), never for time, except the length of
an outage itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable

import aiohttp
import pytest

from tests.faults.conftest import Cluster
from tests.faults.load import Figures, Load
from tests.test_media_api import TEXT, upload

pytestmark = pytest.mark.faults

OUTAGE = float(os.environ.get("CONFAB_FAULT_OUTAGE_SECONDS", "15"))  # PostgreSQL, S3
PAUSE = 10.0  # a paused fanout


async def started(
    cluster: Cluster,
    http: aiohttp.ClientSession,
    conversations: int = 4,
    per_conversation: int = 3,
) -> Load:
    load = Load(http, cluster.info)
    await load.prepare(conversations=conversations, per_conversation=per_conversation)
    await load.start()
    await load.progress(20)
    return load


async def test_kill_9_the_nats_node_leading_the_conversations_stream(
    cluster: Cluster, http: aiohttp.ClientSession, record: Callable[[Figures], None]
) -> None:
    load = await started(cluster, http)
    try:
        node = await cluster.stream_leader("CONVERSATIONS")
        assert node.process is not None
        node.process.kill()
        await asyncio.to_thread(node.process.wait)
        # Two of three nodes are a quorum: a new leader is elected and writes go on.
        await load.progress(40)
        await asyncio.to_thread(node.start)  # rejoins at the same address
        await load.progress(20)
        await load.stop()
        record(await load.verify("kill -9 the NATS node leading CONVERSATIONS (R3)"))
    finally:
        await load.close()


async def until_partitions_shared(cluster: Cluster, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (held := await cluster.conversation_partitions()) != [8, 8]:
        assert time.monotonic() < deadline, f"partitions held per messaging copy: {held}"
        await asyncio.sleep(0.2)


async def test_kill_9_each_service_in_turn(
    cluster: Cluster, http: aiohttp.ClientSession, record: Callable[[Figures], None]
) -> None:
    # Four conversations of three senders each: the killed messaging copy holds some of
    # their partitions, so its work is handed over under load, and a fanout node that
    # misses a conversation's last event while its NATS connection or a copy of a
    # service goes finds it by its recheck (docs/reliability.md).
    load = await started(cluster, http)
    restarted: dict[str, float] = {}
    try:
        # The two messaging copies share the conversations, half of the partitions each.
        await until_partitions_shared(cluster)
        for service in ("identity", "messaging", "media", "fanout", "gateway"):
            name = f"{service}-1"
            restarted[name] = round(await cluster.kill_service(name), 2)
            await load.progress(20)  # the other copy carried on; the platform moves on
        # The survivor took the dead copy's partitions; the restarted copy took half back.
        await until_partitions_shared(cluster)
        await load.stop()
        figures = await load.verify(
            "kill -9 one copy of each service in turn", {"restarted_after_s": restarted}
        )
        record(figures)
    finally:
        await load.close()


async def test_stop_postgresql(
    cluster: Cluster, http: aiohttp.ClientSession, record: Callable[[Figures], None]
) -> None:
    load = await started(cluster, http)
    try:
        await asyncio.to_thread(cluster.postgres.stop)
        before = load.acknowledged
        try:
            await asyncio.sleep(OUTAGE)  # the outage itself
            while_down = load.acknowledged - before
        finally:
            await asyncio.to_thread(cluster.postgres.start)
        await load.progress(20)
        await load.stop()
        figures = await load.verify(
            f"PostgreSQL stopped for {OUTAGE:.0f} s",
            {"acknowledged_while_down": while_down},
        )
        record(figures)
        # Writes go to the log, not the database: they are accepted throughout.
        assert while_down > 0, "no message was acknowledged while PostgreSQL was down"
    finally:
        await load.close()


async def test_stop_s3(
    cluster: Cluster, http: aiohttp.ClientSession, record: Callable[[Figures], None]
) -> None:
    load = await started(cluster, http)
    widget, cid = load.senders[0].widget, load.senders[0].conversation_id
    try:
        status, body = await upload(widget, cid, TEXT, "before.txt")
        assert status == 201, body
        await asyncio.to_thread(cluster.s3.stop)
        refused: Counter[str] = Counter()
        try:
            deadline = time.monotonic() + OUTAGE  # the outage itself
            while time.monotonic() < deadline:
                status, body = await upload(widget, cid, TEXT, "during.txt")
                refused[f"{status} {body['error']['code'] if status >= 400 else ''}"] += 1
                await asyncio.sleep(1.0)  # a user trying again now and then
        finally:
            await asyncio.to_thread(cluster.s3.start)
        stopped = time.monotonic()
        while (status := (await upload(widget, cid, TEXT, "after.txt"))[0]) != 201:
            assert time.monotonic() - stopped < 60, f"uploads did not recover: {status}"
            await asyncio.sleep(0.5)
        recovered = round(time.monotonic() - stopped, 2)
        await load.stop()
        figures = await load.verify(
            f"S3 stopped for {OUTAGE:.0f} s",
            {"uploads_during_outage": dict(refused), "uploads_ok_again_after_s": recovered},
        )
        record(figures)
        # Refused clearly: "unavailable, try again", never accepted, never "internal".
        assert set(refused) == {"503 unavailable"}, refused
    finally:
        await load.close()


async def test_pause_a_fanout(
    cluster: Cluster, http: aiohttp.ClientSession, record: Callable[[Figures], None]
) -> None:
    load = await started(cluster, http)
    pid = cluster.stack.pids()["fanout-1"]
    try:
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(PAUSE)  # the pause itself; sends go on meanwhile
        finally:
            os.kill(pid, signal.SIGCONT)
        await load.progress(20)
        await load.stop()
        record(await load.verify(f"fanout-1 paused (SIGSTOP) for {PAUSE:.0f} s"))
    finally:
        os.kill(pid, signal.SIGCONT)
        await load.close()
