"""Message sends through the gateway: closed loop to saturation, and open loop at a fixed rate.

Every 201 is a message JetStream acknowledged. After the run, the conversations'
read models are counted: a message answered 201 but not found is a loss, and
the run says so.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import psutil

from confab.bench.measure import Latencies, ProcessMeter


@dataclass
class Room:
    conversation_id: str
    token: str  # the sender's session


async def prepare(http: aiohttp.ClientSession, info: dict[str, Any], rooms: int) -> list[Room]:
    base = info["gateway_url"]
    admin = {"Authorization": f"Bearer {info['admin_token']}"}
    async with http.post(
        f"{base}/api/admin/workspaces", json={"name": "bench"}, headers=admin
    ) as r:
        workspace = await r.json()
    key = {"X-API-Key": workspace["api_key"]}

    async def room(i: int) -> Room:
        ids = []
        for side in ("a", "b"):
            async with http.post(
                f"{base}/api/v1/users",
                headers=key,
                json={"external_id": f"{i}-{side}", "name": f"U{i}{side}"},
            ) as r:
                ids.append((await r.json())["id"])
        async with http.post(
            f"{base}/api/v1/conversations",
            headers=key,
            json={"participant_ids": ids, "type": "direct"},
        ) as r:
            conversation = await r.json()
        async with http.post(f"{base}/api/v1/sessions", headers=key, json={"user_id": ids[0]}) as r:
            token = (await r.json())["token"]
        return Room(conversation["id"], token)

    return list(await asyncio.gather(*(room(i) for i in range(rooms))))


class Sender:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.latencies = Latencies()
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.sent: dict[str, int] = {}

    async def send(self, room: Room, started: float | None = None) -> None:
        t0 = started if started is not None else time.perf_counter()
        url = f"{self.base}/api/widget/conversations/{room.conversation_id}/messages"
        body = {"content": "benchmark message", "client_msg_id": uuid.uuid4().hex}
        try:
            async with self.http.post(
                url, json=body, headers={"Authorization": f"Bearer {room.token}"}
            ) as r:
                await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
            return
        if status == 201:
            self.ok += 1
            self.sent[room.conversation_id] = self.sent.get(room.conversation_id, 0) + 1
            self.latencies.add(time.perf_counter() - t0)
        else:
            self.errors[str(status)] = self.errors.get(str(status), 0) + 1


async def closed_loop(sender: Sender, rooms: list[Room], workers: int, seconds: float) -> None:
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        room = rooms[i % len(rooms)]
        while time.perf_counter() < deadline:
            await sender.send(room)

    await asyncio.gather(*(worker(i) for i in range(workers)))


async def open_loop(sender: Sender, rooms: list[Room], rate: float, seconds: float) -> None:
    """Send at fixed times; latency counts from the scheduled time (no coordinated omission)."""
    interval = 1.0 / rate
    start = time.perf_counter()
    total = int(rate * seconds)
    tasks = []
    for i in range(total):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(sender.send(rooms[i % len(rooms)], started=due)))
    await asyncio.gather(*tasks)


async def count_stored(http: aiohttp.ClientSession, base: str, rooms: list[Room]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for room in rooms:
        headers = {"Authorization": f"Bearer {room.token}"}
        url = f"{base}/api/widget/conversations/{room.conversation_id}/messages"
        after, n = 0, 0
        while True:
            async with http.get(url, params={"after": after, "limit": 100}, headers=headers) as r:
                page = await r.json()
            n += len(page["data"])
            if not page["has_more"] or not page["data"]:
                break
            after = page["data"][-1]["seq"]
        counts[room.conversation_id] = n
    return counts


async def run(
    info: dict[str, Any],
    mode: str,
    *,
    seconds: float,
    rate: float,
    workers: int,
    rooms: int,
    warmup: float = 2.0,
) -> dict[str, Any]:
    base = info["gateway_url"]
    connector = aiohttp.TCPConnector(limit=max(workers, 256))
    async with aiohttp.ClientSession(connector=connector) as http:
        room_list = await prepare(http, info, rooms)
        warm = Sender(http, base)
        await closed_loop(warm, room_list, min(workers, 16), warmup)
        sender = Sender(http, base)
        pids = {**info["pids"], "load generator": psutil.Process().pid}
        # The generator may be the parent of the stack it started: count it alone.
        with ProcessMeter(pids, alone=("load generator",)) as meter:
            if mode == "closed":
                await closed_loop(sender, room_list, workers, seconds)
            else:
                await open_loop(sender, room_list, rate, seconds)
        stored = await count_stored(http, base, room_list)
    expected = {c: warm.sent.get(c, 0) + sender.sent.get(c, 0) for c in stored}
    lost = sum(max(0, expected[c] - stored[c]) for c in stored)
    extra = sum(max(0, stored[c] - expected[c]) for c in stored)
    return {
        "scenario": f"sends-{mode}",
        "load": (
            f"{workers} concurrent senders on {rooms} conversations for {seconds:.0f} s"
            if mode == "closed"
            else f"{rate:.0f} messages/s on {rooms} conversations for {seconds:.0f} s"
        ),
        "throughput_per_s": round(sender.ok / meter.elapsed, 1),
        "persisted": sender.ok,
        "errors": sender.errors,
        "lost": lost,
        "duplicates": extra,
        "latency": sender.latencies.summary(),
        "processes": meter.report(sender.ok, "message"),
    }
