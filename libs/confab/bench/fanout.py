"""The fanout under load: C sockets on K channels, events from the HTTP API and from sends.

The load generator speaks plain Pusher protocol 7 (a small WebSocket client on
asyncio's transports, no Pusher library), so it can point at any Pusher server:
``--fanout-url``, ``--app-id``, ``--app-key``, ``--app-secret`` (default: a new
workspace of the local stack). It measures:

1. idle: ``--sockets`` connections, each subscribed to one of ``--channels``
   channels; the fanout's RSS growth per connection;
2. api: events triggered through the HTTP API (open loop, one channel each) at
   each rate of ``--deliveries`` (deliveries per second = events/s x sockets
   per channel): delivered events/s, delivery latency (trigger → frame read)
   p50/p99, the fanout's CPU µs per delivered event, deliveries missing;
3. sends: messages sent through the gateway (``--send-rate``/s) to
   ``--conversations`` conversations, each watched by ``--send-sockets``
   sockets on ``private-conversation.{id}``: the same figures, end to end
   (gateway → messaging → JetStream → fanout).

The generator shares the machine: it reports its own CPU share and its event
loop's lag, and says it saturated when either was high (latencies are then
partly its own). The fanout's own loop lag over each run (``fanout_loop_lag_ms``:
p50/p90/p99 at the upper edge of their bucket) is read from its ``/metrics``
before and after (``confab.looplag``); a peer without that histogram gets none.
So are the machine's TCP counters (``tcp``: retransmissions, timeouts, listen
overflows): a delay that no event loop shows is often one of those.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
import psutil

from confab import looplag
from confab.bench.measure import (
    GENERATOR,
    Latencies,
    LoopLag,
    ProcessMeter,
    tcp_counters,
    tcp_delta,
)
from confab.bench.result import Tally, add_error, run_record, scenario_result, target


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fanout scenario")
    g.add_argument("--fanout-url", help="http(s) URL of the Pusher server (default: the stack's)")
    g.add_argument("--app-id", help="Pusher app id (default: a new workspace of the stack)")
    g.add_argument("--app-key")
    g.add_argument("--app-secret")
    g.add_argument("--fanout-pid", type=int, help="pid of the server, for CPU and memory")
    g.add_argument("--sockets", type=int, default=10_000, help="connections (each on 1 channel)")
    g.add_argument("--channels", type=int, default=100, help="channels they are spread over")
    g.add_argument(
        "--deliveries",
        default="20000",
        help="comma-separated target deliveries per second for the HTTP API runs",
    )
    g.add_argument("--send-rate", type=float, default=40.0, help="messages per second (sends)")
    g.add_argument("--conversations", type=int, default=20, help="conversations (sends)")
    g.add_argument("--send-sockets", type=int, default=100, help="sockets per conversation")


# -- a minimal Pusher client ---------------------------------------------------------------------


class Frame(msgspec.Struct):
    event: str
    channel: str | None = None
    data: str = ""


class Stamp(msgspec.Struct):
    t: float = 0.0
    i: int = -1  # which trigger: counted once per socket on arrival


class Content(msgspec.Struct):
    content: str = ""
    client_msg_id: str = ""


_frame = msgspec.json.Decoder(Frame)
_stamp = msgspec.json.Decoder(Stamp)
_content = msgspec.json.Decoder(Content)
_encode = msgspec.json.Encoder().encode


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (mask key zero: XOR leaves the payload as it is)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


PONG = client_frame(b'{"event":"pusher:pong","data":{}}')


class Socket(asyncio.Protocol):
    """One Pusher connection: handshake, subscribe, count what arrives."""

    def __init__(self, run: Recorder, host: str, path: str, no: int = 0) -> None:
        self.run = run
        self.no = no  # this socket's number, for counting arrivals per socket
        self.host = host
        self.path = path
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.buf = b""
        self.socket_id = ""
        self.ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.subscribed: dict[str, asyncio.Future[None]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before connection_established"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if b" 101 " not in buf[:end].split(b"\r\n", 1)[0]:
                self.ready.set_exception(ConnectionError(buf[:end].decode(errors="replace")))
                self.transport.close()  # type: ignore[union-attr]
                return
            self.upgraded = True
            buf = buf[end + 4 :]
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos < head + n:
                break
            payload = buf[pos + head : pos + head + n]
            pos += head + n
            opcode = b0 & 0x0F
            if opcode == 0x1:
                self.on_text(payload)
            elif opcode == 0x9:
                self.transport.write(client_frame(payload, 0xA))  # type: ignore[union-attr]
        self.buf = buf[pos:] if pos < size else b""

    def on_text(self, payload: bytes) -> None:
        frame = _frame.decode(payload)
        event = frame.event
        if event in self.run.watched:
            self.run.on_event(frame, self.no)
        elif event == "pusher:connection_established":
            self.socket_id = json.loads(frame.data)["socket_id"]
            self.ready.set_result(self.socket_id)
        elif event == "pusher_internal:subscription_succeeded":
            waiter = self.subscribed.get(frame.channel or "")
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif event == "pusher:ping":
            self.transport.write(PONG)  # type: ignore[union-attr]
        elif event in ("pusher:error", "pusher:subscription_error"):
            self.run.errors[event] = self.run.errors.get(event, 0) + 1
            waiter = self.subscribed.get(frame.channel or "")
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionError(frame.data))

    async def subscribe(self, channel: str, auth: str = "", channel_data: str = "") -> None:
        waiter = self.subscribed[channel] = asyncio.get_running_loop().create_future()
        data = {"channel": channel, "auth": auth} if auth else {"channel": channel}
        if channel_data:
            data["channel_data"] = channel_data
        self.transport.write(client_frame(_encode({"event": "pusher:subscribe", "data": data})))  # type: ignore[union-attr]
        await asyncio.wait_for(waiter, 30)


@dataclass
class Recorder:
    """What the sockets read: counts and latencies of the watched events, and each
    (item, socket) counted on arrival, so that a loss or a duplicate shows."""

    watched: frozenset[str] = frozenset()
    received: int = 0
    closed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: Latencies = field(default_factory=Latencies)
    tally: Tally = field(default_factory=Tally)
    measuring: bool = False
    from_content: bool = False  # message.created: the stamp ends its client_msg_id
    expected: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, frame: Frame, socket_no: int = 0) -> None:
        self.received += 1
        if self.received >= self.expected > 0:
            self.done.set()
        if not self.measuring:
            return
        try:
            if self.from_content:
                item = _content.decode(frame.data).client_msg_id
                sent = float(item.rsplit("@", 1)[1])
            else:
                stamp = _stamp.decode(frame.data)
                sent, item = stamp.t, stamp.i
        except (msgspec.DecodeError, ValueError, IndexError):
            add_error(self.errors, f"unreadable {frame.event}")
            return
        self.tally.arrive((item, socket_no))
        self.latencies.add(time.perf_counter() - sent)


@dataclass
class Target:
    http_url: str
    host: str
    port: int
    app_id: str
    key: str
    secret: str
    pid: int | None

    def path(self) -> str:
        return f"/app/{self.key}?protocol=7&client=confab-bench"

    def sign_channel(self, socket_id: str, channel: str, channel_data: str = "") -> str:
        signed = (
            f"{socket_id}:{channel}:{channel_data}" if channel_data else f"{socket_id}:{channel}"
        )
        digest = hmac.new(self.secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        return f"{self.key}:{digest}"

    def signed(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """Pusher HTTP API signing (as the server SDKs do)."""
        params = {
            "auth_key": self.key,
            "auth_timestamp": str(int(time.time())),
            "auth_version": "1.0",
            "body_md5": hashlib.md5(body).hexdigest(),
        }
        query = "&".join(f"{k}={params[k]}" for k in sorted(params))
        to_sign = f"{method}\n{path}\n{query}"
        params["auth_signature"] = hmac.new(
            self.secret.encode(), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        return params


def stamped(item: str, due: float) -> str:
    """A client_msg_id that carries the send's scheduled time, read back on arrival."""
    return f"{item}@{due!r}"


async def connect(target: Target, run: Recorder, no: int = 0) -> Socket:
    loop = asyncio.get_running_loop()
    _, sock = await loop.create_connection(
        lambda: Socket(run, f"{target.host}:{target.port}", target.path(), no),
        target.host,
        target.port,
    )
    await asyncio.wait_for(sock.ready, 30)
    return sock


async def bounded(coros: list[Awaitable[Any]], limit: int = 200) -> list[Any]:
    slots = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[Any]) -> Any:
        async with slots:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


# -- the run -----------------------------------------------------------------------------------


async def _workspace(http: aiohttp.ClientSession, info: dict[str, Any]) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {info['admin_token']}"}
    async with http.post(
        f"{info['gateway_url']}/api/admin/workspaces", json={"name": "bench-fanout"}, headers=admin
    ) as r:
        return dict(await r.json())


async def resolve_target(
    http: aiohttp.ClientSession, info: dict[str, Any], args: argparse.Namespace
) -> tuple[Target, dict[str, Any] | None]:
    url = urlsplit(args.fanout_url or info["fanout_http_url"])
    workspace = None
    if args.app_key and args.app_secret and args.app_id:
        app_id, key, secret = args.app_id, args.app_key, args.app_secret
    else:
        workspace = await _workspace(http, info)
        key, secret = workspace["app_key"], workspace["app_secret"]
        app_id = workspace["pusher_app_id"]  # the numeric alias, as an SDK would send it
    pid = args.fanout_pid or (None if args.fanout_url else info.get("pids", {}).get("fanout"))
    target = Target(
        http_url=f"{url.scheme}://{url.netloc}",
        host=url.hostname or "127.0.0.1",
        port=url.port or (443 if url.scheme == "https" else 80),
        app_id=app_id,
        key=key,
        secret=secret,
        pid=pid,
    )
    return target, workspace


def server_rss(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


async def _idle(
    target: Target, args: argparse.Namespace, run: Recorder
) -> tuple[list[Socket], dict[str, Any]]:
    before = server_rss(target.pid)
    started = time.perf_counter()
    sockets: list[Socket] = await bounded([connect(target, run, i) for i in range(args.sockets)])
    await bounded([s.subscribe(f"bench-{i % args.channels}") for i, s in enumerate(sockets)])
    took = time.perf_counter() - started
    await asyncio.sleep(1.0)  # let the server settle its allocations (not a synchronisation)
    after = server_rss(target.pid)
    return sockets, {
        "sockets": len(sockets),
        "channels": args.channels,
        "connect_and_subscribe_seconds": round(took, 2),
        "server_rss_mb_before": round(before / 2**20, 1),
        "server_rss_mb_after": round(after / 2**20, 1),
        "kb_per_idle_connection": round((after - before) / len(sockets) / 1024, 2)
        if target.pid
        else None,
    }


class CpuSplit:
    """The server's user and system CPU seconds during a window (system time includes,
    on loopback, the TCP receive work of the peers it writes to)."""

    def __init__(self, pid: int | None) -> None:
        self.proc = psutil.Process(pid) if pid else None
        self.user = self.system = 0.0

    def __enter__(self) -> CpuSplit:
        if self.proc is not None:
            t = self.proc.cpu_times()
            self.user, self.system = -t.user, -t.system
        return self

    def __exit__(self, *_: Any) -> None:
        if self.proc is not None:
            t = self.proc.cpu_times()
            self.user += t.user
            self.system += t.system


def _meter(target: Target) -> ProcessMeter:
    pids = {GENERATOR: psutil.Process().pid}
    if target.pid:
        pids["fanout"] = target.pid
    return ProcessMeter(pids, alone=(GENERATOR, "fanout"))


def _summary(
    name: str,
    load: str,
    offered: int,
    run: Recorder,
    meter: ProcessMeter,
    lag: LoopLag,
    elapsed: float,
    split: CpuSplit,
    errors: dict[str, int],
    server_lag: dict[str, float | None] | None,
) -> dict[str, Any]:
    """The uniform run record (unit: one event delivered to one socket), with the
    fanout's CPU per delivery split into user and system time, and its own loop lag."""
    delivered = run.tally.unique
    run.tally.expected = offered
    record = run_record(
        name,
        load,
        unit="delivery",
        work=delivered,
        latencies=run.latencies,
        meter=meter,
        lag=lag,
        loss=run.tally.counts(),
        errors=errors,
        seconds=elapsed,
    )
    fanout = record["processes"].get("fanout")

    def per_delivery(seconds: float) -> float | None:
        return round(seconds / delivered * 1e6, 2) if fanout and delivered else None

    record.update(
        deliveries_expected=offered,
        deliveries=delivered,
        missing=record["lost"],
        delivered_per_s=record["throughput_per_s"],
        fanout_cpu_us_per_delivery=per_delivery(fanout["cpu_seconds"]) if fanout else None,
        fanout_user_cpu_us_per_delivery=per_delivery(split.user),
        fanout_system_cpu_us_per_delivery=per_delivery(split.system),
        fanout_cpu_share=fanout["cpu_share"] if fanout else None,
        generator_cpu_share=record["generator"]["cpu_share"],
        generator_loop_lag_p99_ms=record["generator"]["loop_lag_p99_ms"],
        fanout_loop_lag_ms=server_lag,
    )
    return record


async def settled(http: aiohttp.ClientSession, target: Target, timeout: float = 60.0) -> None:
    """Until a Confab fanout has let the closed sockets go (its /healthz counts them), so
    that the next run does not pay for the closing."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            async with http.get(f"{target.http_url}/healthz") as r:
                if (await r.json(content_type=None)).get("connections", 0) == 0:
                    return
        except (aiohttp.ClientError, ValueError, AttributeError):
            return  # not a Confab fanout: nothing to wait for
        await asyncio.sleep(0.2)


async def loop_lag_buckets(http: aiohttp.ClientSession, target: Target) -> looplag.Buckets | None:
    """The fanout's own event-loop lag histogram (``/metrics``); ``None`` for a server that
    does not publish it (Soketi)."""
    try:
        async with http.get(f"{target.http_url}/metrics") as r:
            if r.status != 200:
                return None
            found = looplag.buckets_of(await r.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return found or None


async def _server_lag(
    http: aiohttp.ClientSession, target: Target, before: looplag.Buckets | None
) -> dict[str, float | None] | None:
    after = await loop_lag_buckets(http, target)
    if before is None or after is None:
        return None
    return looplag.percentiles(before, after, (0.5, 0.9, 0.99, 1.0))


async def drain(run: Recorder, expected: int, timeout: float = 10.0) -> None:
    """Until every expected delivery arrived, or ``timeout`` (the rest count as missing)."""
    run.expected = expected
    run.done.clear()
    if run.received < expected:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.done.wait(), timeout)


async def _api_run(
    http: aiohttp.ClientSession,
    target: Target,
    args: argparse.Namespace,
    run: Recorder,
    deliveries: int,
) -> dict[str, Any]:
    per_channel = max(1, args.sockets // args.channels)
    rate = deliveries / per_channel
    total = int(rate * args.seconds)
    path = f"/apps/{target.app_id}/events"
    url = target.http_url + path
    failures: dict[str, int] = {}

    async def trigger(i: int, due: float) -> None:
        body = _encode(
            {
                "name": "bench",
                "channels": [f"bench-{i % args.channels}"],
                "data": _encode({"t": due, "i": i}).decode(),
            }
        )
        try:
            async with http.post(
                url,
                data=body,
                params=target.signed("POST", path, body),
                headers={"Content-Type": "application/json"},
            ) as r:
                await r.read()
                if r.status != 200:
                    add_error(failures, str(r.status))
        except (aiohttp.ClientError, TimeoutError) as exc:
            add_error(failures, type(exc).__name__)

    run.received, run.latencies, run.measuring, run.expected = 0, Latencies(), True, 0
    run.tally = Tally()
    tasks = []
    lag_before = await loop_lag_buckets(http, target)
    tcp_before = tcp_counters()
    with _meter(target) as meter, LoopLag() as lag, CpuSplit(target.pid) as split:
        start = time.perf_counter()
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(trigger(i, due)))
        await asyncio.gather(*tasks)
        await drain(run, total * per_channel)
        elapsed = time.perf_counter() - start
    run.measuring = False
    server_lag = await _server_lag(http, target, lag_before)
    tcp = tcp_delta(tcp_before)
    result = _summary(
        f"api-{deliveries}",
        f"{rate:.0f} events/s through the HTTP API, each to {per_channel} sockets "
        f"({deliveries} deliveries/s offered) for {args.seconds:.0f} s",
        total * per_channel,
        run,
        meter,
        lag,
        elapsed,
        split,
        failures,
        server_lag,
    )
    result["tcp"] = tcp
    result["trigger_failures"] = failures
    return result


async def _sends_run(
    http: aiohttp.ClientSession,
    target: Target,
    info: dict[str, Any],
    workspace: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    base = info["gateway_url"]
    key = {"X-API-Key": workspace["api_key"]}

    async def conversation(i: int) -> tuple[str, str, str]:
        ids = []
        for side in ("a", "b"):
            async with http.post(
                f"{base}/api/v1/users",
                headers=key,
                json={"external_id": f"f{i}{side}", "name": f"U{i}"},
            ) as r:
                ids.append((await r.json())["id"])
        async with http.post(
            f"{base}/api/v1/conversations",
            headers=key,
            json={"participant_ids": ids, "type": "direct"},
        ) as r:
            cid = (await r.json())["id"]
        async with http.post(f"{base}/api/v1/sessions", headers=key, json={"user_id": ids[0]}) as r:
            token = (await r.json())["token"]
        return cid, token, ids[1]

    rooms = list(await bounded([conversation(i) for i in range(args.conversations)], 8))
    run = Recorder(watched=frozenset({"message.created"}), from_content=True)
    sockets = await bounded(
        [connect(target, run, i) for i in range(args.conversations * args.send_sockets)]
    )
    for i, sock in enumerate(sockets):
        cid, _, reader = rooms[i % len(rooms)]
        channel = f"private-conversation.{cid}"
        # A conversation channel is a participant's: its authorization names the user.
        named = json.dumps({"user_id": reader})
        await sock.subscribe(channel, target.sign_channel(sock.socket_id, channel, named), named)
    total = int(args.send_rate * args.seconds)
    errors: dict[str, int] = {}

    async def post(i: int, due: float) -> None:
        cid, token, _ = rooms[i % len(rooms)]
        try:
            async with http.post(
                f"{base}/api/widget/conversations/{cid}/messages",
                json={"content": "bench", "client_msg_id": stamped(uuid.uuid4().hex, due)},
                headers={"Authorization": f"Bearer {token}"},
            ) as r:
                await r.read()
                if r.status != 201:
                    add_error(errors, str(r.status))
        except (aiohttp.ClientError, TimeoutError) as exc:
            add_error(errors, type(exc).__name__)

    run.measuring = True
    tasks = []
    lag_before = await loop_lag_buckets(http, target)
    tcp_before = tcp_counters()
    with _meter(target) as meter, LoopLag() as lag, CpuSplit(target.pid) as split:
        start = time.perf_counter()
        for i in range(total):
            due = start + i / args.send_rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(i, due)))
        await asyncio.gather(*tasks)
        await drain(run, total * args.send_sockets)
        elapsed = time.perf_counter() - start
    server_lag = await _server_lag(http, target, lag_before)
    tcp = tcp_delta(tcp_before)
    for sock in sockets:
        if sock.transport is not None:
            sock.transport.close()
    result = _summary(
        "sends",
        f"{args.send_rate:.0f} messages/s through the gateway to {len(rooms)} conversations, "
        f"each watched by {args.send_sockets} sockets, for {args.seconds:.0f} s "
        "(latency: POST → message.created read)",
        total * args.send_sockets,
        run,
        meter,
        lag,
        elapsed,
        split,
        errors,
        server_lag,
    )
    result["tcp"] = tcp
    result["send_errors"] = errors
    return result


async def run(info: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as http:
        target, workspace = await resolve_target(http, info, args)
        recorder = Recorder(watched=frozenset({"bench"}))
        sockets, idle = await _idle(target, args, recorder)
        runs = []
        for deliveries in [int(x) for x in str(args.deliveries).split(",") if x.strip()]:
            runs.append(await _api_run(http, target, args, recorder, deliveries))
        for sock in sockets:
            if sock.transport is not None:
                sock.transport.close()
        await settled(http, target)
        if workspace is not None:
            runs.append(await _sends_run(http, target, info, workspace, args))
    return scenario_result(
        "fanout",
        runs,
        targets(runs),
        target={"url": target.http_url, "app_id": target.app_id, "server_pid": target.pid},
        idle=idle,
        highlights=[
            f"target {target.http_url}; idle: {idle['sockets']} sockets on "
            f"{idle['channels']} channels, {idle['kb_per_idle_connection']} KB each "
            f"(server RSS {idle['server_rss_mb_before']} → {idle['server_rss_mb_after']} MB)",
            *(
                f"{x['run']}: fanout CPU {x['fanout_cpu_us_per_delivery']} µs/delivery "
                f"(user {x['fanout_user_cpu_us_per_delivery']}, "
                f"system {x['fanout_system_cpu_us_per_delivery']})"
                for x in runs
            ),
        ],
    )


def targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    measured = [
        x["fanout_cpu_us_per_delivery"]
        for x in runs
        if x["run"].startswith("api-") and x["fanout_cpu_us_per_delivery"] is not None
    ]
    best = min(measured) if measured else None
    return [
        target(
            "fanout CPU per delivered event (HTTP API)",
            "<= 8 µs",
            best,
            None if best is None else best <= 8,
        )
    ]
