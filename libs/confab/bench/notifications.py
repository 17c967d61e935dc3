"""Notifications: decisions per second with 10,000 offline recipients, and what the
notifier costs sends.

Three runs on one stack:

- ``sends, notifier paused``: the closed send loop with the notifier process stopped
  (SIGSTOP), the baseline;
- ``sends, notifier running``: the same loop on fresh conversations with the notifier
  folding every message and deciding (workspace delay 1 s: every recipient of a
  direct conversation is offline, so each send is a notification to decide);
- ``decisions``: 10,000 users (``--recipients``) who are offline (no socket) in group
  conversations of up to 1,000 with one sender, who posts one message in each
  (workspace delay 0). From that post to the last of the 10,000 decisions stored (the
  ``outbox`` rows): decisions per second; and when the last of them was sent (its
  ``notification.due`` appended to ``NOTIFIER``: ``all_sent_after_s``). The users have
  no email address and no push target, so no mail is written.

Each decision is counted once by its id (the outbox is unique per notification): fewer
than 10,000 is reported as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

import aiohttp
import asyncpg

from confab.bench.measure import Latencies, LoopLag, ProcessMeter, with_generator
from confab.bench.result import run_record, target
from confab.bench.sends import Sender, closed_loop, prepare, workspace
from confab.db import plain_url

GROUP = 999  # recipients per conversation (with the sender: the 1,000 a conversation takes)


@contextlib.contextmanager
def paused(pid: int | None) -> Any:
    if pid:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)


async def _settings(http: aiohttp.ClientSession, base: str, key: str, delay: float) -> None:
    async with http.patch(
        f"{base}/api/v1/notification-settings",
        json={"delay_seconds": delay},
        headers={"X-API-Key": key},
    ) as r:
        if r.status != 200:
            raise RuntimeError(f"notification settings answered {r.status}: {await r.text()}")


async def _sends(
    http: aiohttp.ClientSession, info: dict[str, Any], args: Any, notifier: bool
) -> dict[str, Any]:
    base = info["gateway_url"]
    space = await workspace(http, info, f"bench-notify-{int(notifier)}")
    await _settings(http, base, space["api_key"], 1.0)
    rooms = await prepare(http, info, args.rooms, space=space)
    warm = Sender(http, base)
    await closed_loop(warm, rooms, min(args.workers, 16), args.warmup)
    sender = Sender(http, base)
    meter = ProcessMeter(with_generator(info["pids"]))
    pid = None if notifier else info["pids"].get("notifier")
    with paused(pid), meter, LoopLag() as lag:
        await closed_loop(sender, rooms, args.workers, args.seconds)
    return run_record(
        "sends, notifier running" if notifier else "sends, notifier paused",
        f"{args.workers} concurrent senders on {args.rooms} direct conversations for "
        f"{args.seconds:g} s, each message a notification to decide"
        if notifier
        else "the same, with the notifier process stopped (SIGSTOP)",
        unit="message",
        work=sender.ok,
        latencies=sender.latencies,
        meter=meter,
        lag=lag,
        loss={"sent": sender.ok, "received": sender.ok, "lost": 0, "duplicates": 0},
        errors={**warm.errors, **sender.errors},
    )


async def _users(
    http: aiohttp.ClientSession, base: str, key: str, count: int, prefix: str = "offline"
) -> list[str]:
    slots = asyncio.Semaphore(32)

    async def one(i: int) -> str:
        async with (
            slots,
            http.post(
                f"{base}/api/v1/users",
                json={"external_id": f"{prefix}-{i}", "name": f"{prefix} {i}"},
                headers={"X-API-Key": key},
            ) as r,
        ):
            if r.status not in (200, 201):
                raise RuntimeError(f"creating a user answered {r.status}: {await r.text()}")
            return str((await r.json())["id"])

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _decisions(
    http: aiohttp.ClientSession, info: dict[str, Any], recipients_wanted: int
) -> dict[str, Any]:
    base = info["gateway_url"]
    space = await workspace(http, info, "bench-notify-10k")
    key = {"X-API-Key": space["api_key"]}
    await _settings(http, base, space["api_key"], 0.0)
    [sender_id] = await _users(http, base, space["api_key"], 1, prefix="sender")
    recipients = await _users(http, base, space["api_key"], recipients_wanted)
    async with http.post(f"{base}/api/v1/sessions", json={"user_id": sender_id}, headers=key) as r:
        token = (await r.json())["token"]
    conversations = []
    for start in range(0, recipients_wanted, GROUP):
        ids = [sender_id, *recipients[start : start + GROUP]]
        async with http.post(
            f"{base}/api/v1/conversations",
            json={"participant_ids": ids, "type": "group"},
            headers=key,
        ) as r:
            if r.status != 201:
                raise RuntimeError(f"creating a conversation answered {r.status}: {await r.text()}")
            conversations.append((await r.json())["id"])
    conn = await asyncpg.connect(plain_url(info["database_url"]))
    meter = ProcessMeter(with_generator(info["pids"]))
    latencies = Latencies()
    try:
        with meter:
            started = time.monotonic()
            for cid in conversations:
                async with http.post(
                    f"{base}/api/widget/conversations/{cid}/messages",
                    json={"content": "to everyone"},
                    headers={"Authorization": f"Bearer {token}"},
                ) as r:
                    if r.status != 201:
                        raise RuntimeError(f"posting answered {r.status}: {await r.text()}")
            posted = time.monotonic()
            deadline = posted + 300
            decided = sent = 0
            done = sent_at = None
            while time.monotonic() < deadline:
                row = await conn.fetchrow(
                    "SELECT count(*) AS decided, count(*) FILTER (WHERE status = 'sent') AS sent "
                    "FROM notifier.outbox WHERE workspace_id = $1",
                    space["id"],
                )
                decided, sent = int(row["decided"]), int(row["sent"])
                if done is None and decided >= recipients_wanted:
                    done = time.monotonic()
                if sent >= recipients_wanted:
                    sent_at = time.monotonic()
                    break
                await asyncio.sleep(0.1)
            done = done or time.monotonic()
    finally:
        await conn.close()
    latencies.add(done - posted)
    return run_record(
        "decisions",
        f"{recipients_wanted} offline recipients in {len(conversations)} group conversations, one "
        "message each (delay 0): every decision stored, then sent as notification.due",
        unit="decision",
        work=decided,
        latencies=latencies,
        meter=meter,
        lag=None,
        loss={
            "sent": recipients_wanted,
            "received": decided,
            "lost": max(0, recipients_wanted - decided),
            "duplicates": 0,
        },
        errors={},
        seconds=max(done - started, 1e-3),
        all_sent_after_s=round(sent_at - started, 2) if sent_at else None,
        sent=sent,
    )


async def run(info: dict[str, Any], args: Any) -> list[dict[str, Any]]:
    connector = aiohttp.TCPConnector(limit=max(args.workers, 256))
    async with aiohttp.ClientSession(connector=connector) as http:
        baseline = await _sends(http, info, args, notifier=False)
        loaded = await _sends(http, info, args, notifier=True)
        decisions = await _decisions(http, info, args.recipients)
    loaded["relative_to_baseline"] = round(
        loaded["throughput_per_s"] / max(baseline["throughput_per_s"], 1e-9), 3
    )
    return [baseline, loaded, decisions]


def targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The goal webhooks set for sends (issue 18), applied to the notifier: deciding on
    every message costs sends at most 10 %. Decisions per second have no target yet."""
    if len(runs) < 2:
        return []
    ratio = runs[1].get("relative_to_baseline")
    return [
        target(
            "sends-closed with the notifier deciding",
            ">= 90 % of the figure with it paused",
            ratio,
            ratio is not None and ratio >= 0.9,
        )
    ]
