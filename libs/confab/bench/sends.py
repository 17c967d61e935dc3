"""Message sends through the gateway: closed loop to saturation, and open loop at a fixed rate.

Every 201 is a message JetStream acknowledged. After the run, the conversations'
read models are counted (once they caught up): a message answered 201 but not
found is lost, one found more often than sent a duplicate. The open loop runs
at each of ``--rates`` on fresh conversations, for latency over load.

With ``--generators N`` the load comes from N processes: this one and N - 1 helpers
(``python -m confab.bench.sends``), each with its share of the senders (or of the
rate) on the same conversations, started together. Their answers, latencies and
loop lags are merged into one run; each helper's CPU is a line of its own
(``load generator 2``, …), so no process of the generator hides the stack's figures
and each is judged saturated on its own.

The closed loop ends with its reference, measured on the same NATS server: the bare
cost of a JetStream append from Python (``confab.bench.append``), and the stack's CPU
per message over it (``stack_over_bare_append``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from confab.bench import append
from confab.bench.measure import GENERATOR, Latencies, LoopLag, ProcessMeter, with_generator
from confab.bench.result import add_error, counted, run_record, target


@dataclass
class Room:
    conversation_id: str
    token: str  # the sender's session
    others: list[str]  # the other participants' sessions


async def workspace(http: aiohttp.ClientSession, info: dict[str, Any], name: str) -> dict[str, Any]:
    """A fresh workspace of the stack (its API key, app key and secret)."""
    admin = {"Authorization": f"Bearer {info['admin_token']}"}
    async with http.post(
        f"{info['gateway_url']}/api/admin/workspaces", json={"name": name}, headers=admin
    ) as r:
        if r.status != 201:
            raise RuntimeError(f"creating a workspace answered {r.status}: {await r.text()}")
        return dict(await r.json())


async def prepare(
    http: aiohttp.ClientSession,
    info: dict[str, Any],
    rooms: int,
    participants: int = 2,
    space: dict[str, Any] | None = None,
) -> list[Room]:
    """``rooms`` conversations of ``participants`` users each, with every user's session
    (in ``space``, or a new workspace)."""
    base = info["gateway_url"]
    space = space or await workspace(http, info, "bench")
    key = {"X-API-Key": space["api_key"]}
    slots = asyncio.Semaphore(8)

    async def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with slots, http.post(f"{base}{path}", headers=key, json=body) as r:
            if r.status not in (200, 201):
                raise RuntimeError(f"POST {path} answered {r.status}: {await r.text()}")
            return dict(await r.json())

    async def room(i: int) -> Room:
        ids = [
            (await call("/api/v1/users", {"external_id": f"{i}-{p}", "name": f"U{i}-{p}"}))["id"]
            for p in range(participants)
        ]
        kind = "direct" if participants == 2 else "group"
        conversation = await call("/api/v1/conversations", {"participant_ids": ids, "type": kind})
        tokens = [(await call("/api/v1/sessions", {"user_id": u}))["token"] for u in ids]
        return Room(conversation["id"], tokens[0], tokens[1:])

    return list(await asyncio.gather(*(room(i) for i in range(rooms))))


class Sender:
    """Sends messages, counting each answered 201 (JetStream acknowledged it) per conversation."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.latencies = Latencies()
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.sent: dict[str, int] = {}

    async def send(
        self, room: Room, started: float | None = None, client_msg_id: str | None = None
    ) -> None:
        t0 = started if started is not None else time.perf_counter()
        url = f"{self.base}/api/widget/conversations/{room.conversation_id}/messages"
        body = {"content": "benchmark message", "client_msg_id": client_msg_id or uuid.uuid4().hex}
        try:
            async with self.http.post(
                url, json=body, headers={"Authorization": f"Bearer {room.token}"}
            ) as r:
                await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            add_error(self.errors, type(exc).__name__)
            return
        if status == 201:
            self.ok += 1
            self.sent[room.conversation_id] = self.sent.get(room.conversation_id, 0) + 1
            self.latencies.add(time.perf_counter() - t0)
        else:
            add_error(self.errors, str(status))


async def closed_loop(sender: Sender, rooms: list[Room], workers: int, seconds: float) -> None:
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        room = rooms[i % len(rooms)]
        while time.perf_counter() < deadline:
            await sender.send(room)

    await asyncio.gather(*(worker(i) for i in range(workers)))


RESULT_LIMIT = 256 * 2**20  # a helper's result line: every latency of its run


@dataclass
class Helper:
    """A load generator process of its own, sending its share of the load."""

    name: str
    process: asyncio.subprocess.Process

    @classmethod
    async def start(cls, number: int, spec: dict[str, Any]) -> Helper:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "confab.bench.sends",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=RESULT_LIMIT,
        )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(spec).encode() + b"\n")
        await process.stdin.drain()
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if line.strip() != b"ready":
            process.kill()
            raise RuntimeError(f"load generator {number} did not start")
        return cls(f"{GENERATOR} {number}", process)

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    async def result(self, sender: Sender, lag: LoopLag) -> None:
        """Its answers, latencies and loop lag, merged into this process's (it waits to
        be told to exit, so that its CPU time can still be read)."""
        assert self.process.stdout is not None
        found = json.loads(await self.process.stdout.readline())
        sender.ok += found["ok"]
        for conversation_id, n in found["sent"].items():
            sender.sent[conversation_id] = sender.sent.get(conversation_id, 0) + n
        for error, n in found["errors"].items():
            sender.errors[error] = sender.errors.get(error, 0) + n
        sender.latencies.values.extend(found["latencies"])
        lag.lags.extend(found["lags"])

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"bye\n")
        await self.process.wait()


def helper_spec(
    base: str, rooms: list[Room], mode: str, workers: int, rate: float, seconds: float, first: int
) -> dict[str, Any]:
    """A helper's share: ``workers`` senders (closed loop) or ``rate`` per second (open
    loop), starting at room ``first`` so the shares spread over the conversations."""
    return {
        "base": base,
        "rooms": [[r.conversation_id, r.token] for r in rooms],
        "mode": mode,
        "workers": workers,
        "rate": rate,
        "seconds": seconds,
        "first": first,
    }


async def _helper_main() -> None:
    """``python -m confab.bench.sends``: a helper. Reads its share (one JSON line), says
    ``ready``, sends from the line ``go`` on, then prints what it saw as one JSON line."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = json.loads(await reader.readline())
    rooms = [Room(c, t, []) for c, t in spec["rooms"]]
    first = spec["first"]
    rooms = rooms[first:] + rooms[:first]
    connector = aiohttp.TCPConnector(limit=max(spec["workers"], 256))
    async with aiohttp.ClientSession(connector=connector) as http:
        sender = Sender(http, spec["base"])
        print("ready", flush=True)
        await reader.readline()
        with LoopLag() as lag:
            if spec["mode"] == "closed":
                await closed_loop(sender, rooms, spec["workers"], spec["seconds"])
            else:

                async def send(i: int, due: float) -> None:
                    await sender.send(rooms[i % len(rooms)], started=due)

                await open_loop(spec["rate"], spec["seconds"], send)
    found = {
        "ok": sender.ok,
        "sent": sender.sent,
        "errors": sender.errors,
        "latencies": sender.latencies.values,
        "lags": lag.lags,
    }
    print(json.dumps(found), flush=True)
    await reader.readline()  # "bye": its CPU time has been read


async def open_loop(
    rate: float, seconds: float, send: Callable[[int, float], Awaitable[None]]
) -> None:
    """Call ``send(i, due)`` at fixed times; latency counts from ``due`` (no coordinated
    omission: a slow answer does not delay the next send)."""
    start = time.perf_counter()
    tasks = []
    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i, due)))
    await asyncio.gather(*tasks)


def automod_rules(n: int) -> list[dict[str, Any]]:
    """``n`` rules of every kind, none matching the benchmark's text: the cost of checking."""
    kinds: list[dict[str, Any]] = [
        {"kind": "phone", "action": "mask"},
        {"kind": "email", "action": "flag"},
        {"kind": "url", "action": "flag"},
    ]
    rules = [{"id": f"d{i}", **k} for i, k in enumerate(kinds[:n])]
    for i in range(len(rules), n):
        if i % 2:
            words = [f"forbidden{i}x{j}" for j in range(50)]
            rules.append({"id": f"w{i}", "kind": "word", "action": "block", "words": words})
        else:
            pattern = rf"(?i)\b(?:cash|wire|gift)\s*(?:app|transfer|card){i}\b"
            rules.append({"id": f"r{i}", "kind": "regex", "action": "mask", "pattern": pattern})
    return rules


async def put_rules(http: aiohttp.ClientSession, base: str, api_key: str, n: int) -> None:
    async with http.put(
        f"{base}/api/v1/moderation/automod",
        json={"rules": automod_rules(n)},
        headers={"X-API-Key": api_key},
    ) as r:
        if r.status != 200:
            raise RuntimeError(f"setting automod rules answered {r.status}: {await r.text()}")


class Unreadable(Exception):
    """The history could not be read back (the message says what the gateway answered)."""


async def count_stored(http: aiohttp.ClientSession, base: str, rooms: list[Room]) -> dict[str, int]:
    """Messages in each conversation's read model, read back page by page."""
    counts: dict[str, int] = {}
    for room in rooms:
        headers = {"Authorization": f"Bearer {room.token}"}
        url = f"{base}/api/widget/conversations/{room.conversation_id}/messages"
        after, n = 0, 0
        while True:
            async with http.get(url, params={"after": after, "limit": 100}, headers=headers) as r:
                if r.status != 200:
                    raise Unreadable(f"GET {url} answered {r.status}: {(await r.text())[:200]}")
                page = await r.json()
            n += len(page["data"])
            if not page["has_more"] or not page["data"]:
                break
            after = page["data"][-1]["seq"]
        counts[room.conversation_id] = n
    return counts


async def settled_counts(
    http: aiohttp.ClientSession,
    base: str,
    rooms: list[Room],
    expected: dict[str, int],
    timeout: float = 30.0,
) -> dict[str, int]:
    """Stored counts once the projection caught up with ``expected`` (or at ``timeout``:
    what is still missing then is lost)."""
    deadline = time.perf_counter() + timeout
    while True:
        try:
            stored = await count_stored(http, base, rooms)
        except Unreadable:
            if time.perf_counter() > deadline:
                raise
        else:
            if all(stored.get(c, 0) >= n for c, n in expected.items()):
                return stored
            if time.perf_counter() > deadline:
                return stored
        await asyncio.sleep(0.2)


async def run(
    info: dict[str, Any],
    mode: str,
    *,
    seconds: float,
    rates: list[float],
    workers: int,
    rooms: int,
    warmup: float = 2.0,
    automod_rules: int = 0,
    generators: int = 1,
) -> list[dict[str, Any]]:
    """One run for the closed loop; one per rate for the open loop (latency over load);
    ``automod_rules``: that many automatic-moderation rules in force while sending;
    ``generators``: load generator processes sharing the load."""
    connector = aiohttp.TCPConnector(limit=max(workers, 256))
    async with aiohttp.ClientSession(connector=connector) as http:
        runs = [
            await _one_run(
                http, info, mode, rate, seconds, workers, rooms, warmup, automod_rules, generators
            )
            for rate in (rates if mode == "open" else [0.0])
        ]
    if mode == "closed":  # the reference: a bare append on the same server, same senders
        bare = await asyncio.to_thread(append.measure, info, min(seconds, 10.0), workers)
        for record in runs:
            append.compare(record, bare)
    return runs


async def _one_run(
    http: aiohttp.ClientSession,
    info: dict[str, Any],
    mode: str,
    rate: float,
    seconds: float,
    workers: int,
    rooms: int,
    warmup: float,
    automod_rules: int = 0,
    generators: int = 1,
) -> dict[str, Any]:
    base = info["gateway_url"]
    space = await workspace(http, info, "bench")
    if automod_rules:
        await put_rules(http, base, space["api_key"], automod_rules)
    room_list = await prepare(http, info, rooms, space=space)
    warm = Sender(http, base)
    await closed_loop(warm, room_list, min(workers, 16), warmup)
    sender = Sender(http, base)

    async def send(i: int, due: float) -> None:
        await sender.send(room_list[i % len(room_list)], started=due)

    # This process's share of the senders (or of the rate) and each helper's.
    shares = max(1, min(generators, workers if mode == "closed" else generators))
    mine_workers = workers - (workers // shares) * (shares - 1)
    helpers = [
        await Helper.start(
            n + 2,
            helper_spec(base, room_list, mode, workers // shares, rate / shares, seconds, n + 1),
        )
        for n in range(shares - 1)
    ]
    # The generator may be the parent of the stack it started: count it alone.
    pids = {**with_generator(info["pids"]), **{h.name: h.process.pid for h in helpers}}
    meter = ProcessMeter(pids, alone=tuple(h.name for h in helpers))
    with meter, LoopLag() as lag:
        for helper in helpers:
            helper.go()
        if mode == "closed":
            await closed_loop(sender, room_list, mine_workers, seconds)
        else:
            await open_loop(rate / shares, seconds, send)
        for helper in helpers:
            await helper.result(sender, lag)
    for helper in helpers:
        await helper.close()
    expected = {
        r.conversation_id: warm.sent.get(r.conversation_id, 0)
        + sender.sent.get(r.conversation_id, 0)
        for r in room_list
    }
    stored = await settled_counts(http, base, room_list, expected)
    loss = counted(expected, stored)
    # Only this run's messages count as sent and received (warm-up ones are checked too).
    warmed = sum(warm.sent.values())
    loss["sent"] -= warmed
    loss["received"] -= warmed
    rules = f", {automod_rules} automod rules" if automod_rules else ""
    processes = f", from {shares} processes" if shares > 1 else ""
    return run_record(
        (f"{workers} senders" if mode == "closed" else f"{rate:g}/s") + rules + processes,
        (
            f"{workers} concurrent senders on {rooms} conversations for {seconds:g} s"
            if mode == "closed"
            else f"{rate:g} messages/s on {rooms} conversations for {seconds:g} s"
        )
        + rules
        + processes,
        unit="message",
        work=sender.ok,
        latencies=sender.latencies,
        meter=meter,
        lag=lag,
        loss=loss,
        errors={**warm.errors, **sender.errors},
        offered_per_s=rate if mode == "open" else None,
    )


def targets(scenario: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if scenario != "sends-closed" or not runs:
        return []
    best = max(r["throughput_per_s"] for r in runs)
    return [target("persisted sends on 2 cores", ">= 3,000 messages/s", best, best >= 3000)]


if __name__ == "__main__":
    import uvloop

    uvloop.run(_helper_main())
