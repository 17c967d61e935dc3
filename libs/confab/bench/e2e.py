"""End to end: a message sent through the gateway, read on the other participants' sockets.

``--rooms`` group conversations of ``--participants`` users: one sends (REST,
open loop at each of ``--rates``), every other participant has a Pusher socket
subscribed to ``private-conversation.{id}``, authorized by the gateway with its
own session as a widget would be. Latency runs from the send's scheduled time
to ``message.created`` read on a socket (gateway → messaging → JetStream →
fanout → socket); each message is counted once per recipient socket on arrival.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from confab.bench.fanout import Recorder, Socket, Target, bounded, connect, drain, stamped
from confab.bench.measure import Latencies, LoopLag, ProcessMeter, with_generator
from confab.bench.result import Tally, run_record, target
from confab.bench.sends import Room, Sender, open_loop, prepare, workspace


async def _listen(
    http: aiohttp.ClientSession,
    info: dict[str, Any],
    fanout: Target,
    recorder: Recorder,
    rooms: list[Room],
) -> list[Socket]:
    """A socket per recipient, subscribed with the gateway's authorization of its session."""
    pairs = [(room, token) for room in rooms for token in room.others]

    async def one(no: int, room: Room, token: str) -> Socket:
        sock = await connect(fanout, recorder, no)
        channel = f"private-conversation.{room.conversation_id}"
        async with http.post(
            f"{info['gateway_url']}/api/widget/broadcasting/auth",
            data={"socket_id": sock.socket_id, "channel_name": channel},
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            if r.status != 200:
                raise RuntimeError(f"broadcasting/auth answered {r.status}: {await r.text()}")
            auth = await r.json()
        await sock.subscribe(channel, auth["auth"], auth.get("channel_data") or "")
        return sock

    return list(await bounded([one(i, room, t) for i, (room, t) in enumerate(pairs)], 32))


async def run(
    info: dict[str, Any], args: argparse.Namespace, rates: list[float]
) -> list[dict[str, Any]]:
    """One run per rate, on the same conversations and sockets (warmed up once)."""
    runs = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as http:
        space = await workspace(http, info, "bench-e2e")
        rooms = await prepare(http, info, args.rooms, args.participants, space)
        recorder = Recorder(watched=frozenset({"message.created"}), from_content=True)
        sockets = await _listen(http, info, _fanout(info, space), recorder, rooms)
        try:
            warm = Sender(http, info["gateway_url"])

            async def warm_send(i: int, due: float) -> None:
                await warm.send(rooms[i % len(rooms)], started=due, client_msg_id=stamped("w", due))

            await open_loop(min(rates[0], 200), args.warmup, warm_send)
            await drain(recorder, warm.ok * (args.participants - 1), 10.0)
            for n, rate in enumerate(rates):
                runs.append(await _one_rate(http, info, args, rooms, recorder, rate, n))
        finally:
            for sock in sockets:
                if sock.transport is not None:
                    sock.transport.close()
    return runs


def _fanout(info: dict[str, Any], space: dict[str, Any]) -> Target:
    """The stack's own fanout, as the workspace's Pusher app."""
    url = urlsplit(info["fanout_http_url"])
    return Target(
        http_url=f"{url.scheme}://{url.netloc}",
        host=url.hostname or "127.0.0.1",
        port=url.port or 80,
        app_id=space["pusher_app_id"],
        key=space["app_key"],
        secret=space["app_secret"],
        pid=info.get("pids", {}).get("fanout"),
    )


async def _one_rate(
    http: aiohttp.ClientSession,
    info: dict[str, Any],
    args: argparse.Namespace,
    rooms: list[Room],
    recorder: Recorder,
    rate: float,
    n: int,
) -> dict[str, Any]:
    recipients = args.participants - 1
    sender = Sender(http, info["gateway_url"])

    async def send(i: int, due: float) -> None:
        await sender.send(
            rooms[i % len(rooms)], started=due, client_msg_id=stamped(f"{n}-{i}", due)
        )

    recorder.tally, recorder.latencies = Tally(), Latencies()
    recorder.received, recorder.measuring = 0, True
    meter = ProcessMeter(with_generator(info["pids"]))
    with meter, LoopLag() as lag:
        await open_loop(rate, args.seconds, send)
        await drain(recorder, sender.ok * recipients, 10.0)
    recorder.measuring = False
    recorder.tally.expect(sender.ok * recipients)
    return run_record(
        f"{rate:g}/s",
        f"{rate:g} messages/s through the gateway to {len(rooms)} conversations of "
        f"{args.participants} participants, each message read on {recipients} other "
        f"participants' sockets, for {args.seconds:g} s (latency: send → read on a socket)",
        unit="delivery",
        work=recorder.tally.unique,
        latencies=recorder.latencies,
        meter=meter,
        lag=lag,
        loss=recorder.tally.counts(),
        errors=sender.errors,
        offered_per_s=rate,
        messages_sent=sender.ok,
        send_latency=sender.latencies.summary(),
    )


def targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    at = [r for r in runs if r["offered_per_s"] == 1000]
    if not at:
        return [target("send → delivery p99 at 1,000 messages/s", "<= 25 ms", None, None)]
    p99 = at[-1]["latency"]["p99_ms"]
    return [target("send → delivery p99 at 1,000 messages/s", "<= 25 ms", p99, p99 <= 25)]
