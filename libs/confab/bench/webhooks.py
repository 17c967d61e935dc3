"""Webhooks: deliveries per second to a local receiver, and what endpoints cost sends.

Runs of the closed send loop on one stack, each on fresh conversations of a workspace
of its own: ``no endpoints`` (the baseline) and ``3 endpoints`` (three endpoints
subscribed to ``message.*``, on a receiver on loopback that verifies every signature
with ``standardwebhooks``), ``--pairs`` of them in ABBA order (0 3 3 0 …: two pairs by
default) after one run without endpoints that is not counted (``settling``: a fresh
stack's first run is faster than the rest), and after each loaded run its
``deliveries``: how long until every delivery of every message has arrived, so
deliveries per second over the whole run, and each delivery's latency from the send's
answer to its arrival. The ratio is the mean of the loaded runs over the mean of the
baselines: one pair of runs moves by ±10 % on this machine, which is the size of what
is measured. Every delivery is counted by
(endpoint, ``webhook-id``): one missing is lost, one twice a duplicate. The goal
(issue 18): with three endpoints, sends stay within 10 % of the figure without.

The receiver runs as a process of its own at the lowest CPU priority (``python -m
confab.bench.webhooks PORT``), as a tenant's would run on a machine of its own: here it
shares the two cores, and what it spends is not the platform's. The bench hands it the
endpoints' secrets and asks it for what arrived (``RemoteReceiver``). ``Receiver`` is
also what the tests deliver to, in their own process.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from confab.bench.measure import (
    RECEIVER,
    Latencies,
    LoopLag,
    ProcessMeter,
    with_generator,
)
from confab.bench.result import Tally, run_record, target
from confab.bench.sends import Sender, closed_loop, prepare, workspace

Answer = Callable[[web.Request], tuple[int, dict[str, str]]]


@dataclass
class Received:
    path: str
    message_id: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes
    at: float  # time.monotonic()
    verified: bool


@dataclass
class Receiver:
    """An endpoint on loopback: records every request, verifies its signature against
    ``secrets`` (any may sign), and answers what ``answer`` says (200 by default), once
    ``hold`` is set if there is one."""

    host: str = "127.0.0.1"
    port: int = 0
    secrets: dict[str, list[str]] = field(default_factory=dict)  # by path
    answer: Answer | None = None
    received: list[Received] = field(default_factory=list)
    on_receive: Callable[[Received], None] | None = None
    hold: asyncio.Event | None = None  # answers wait for it (requests are recorded at once)
    keep_bodies: bool = True  # the bench's own receiver keeps ids only
    _runner: web.AppRunner | None = None
    _signers: dict[str, Any] = field(default_factory=dict)  # a Webhook per secret
    _site: web.TCPSite | None = None

    async def start(self) -> Receiver:
        if self._runner is None:
            app = web.Application(client_max_size=1024 * 1024)
            app.router.add_post("/{path:.*}", self._hook)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
        if self.port == 0:
            from confab_infra.backends import free_port

            self.port = free_port(self.host)
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        return self

    async def stop(self) -> None:
        """Stop listening (connections are refused) until ``start`` again."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def close(self) -> None:
        await self.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, path: str = "hook") -> str:
        return f"http://{self.host}:{self.port}/{path}"

    async def _hook(self, request: web.Request) -> web.Response:
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError

        raw = await request.read()
        path = request.match_info["path"]
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = False
        for secret in self.secrets.get(path, ()):
            signer = self._signers.get(secret)
            if signer is None:
                signer = self._signers[secret] = Webhook(secret)
            try:
                signer.verify(raw, headers, json_parse=False)
            except WebhookVerificationError:
                continue
            verified = True
            break
        item = Received(
            path,
            headers.get("webhook-id", ""),
            headers if self.keep_bodies else {},
            json.loads(raw) if self.keep_bodies else {},
            raw if self.keep_bodies else b"",
            time.monotonic(),
            verified,
        )
        self.received.append(item)
        if self.on_receive is not None:
            self.on_receive(item)
        if self.hold is not None:
            await self.hold.wait()
        status, extra = self.answer(request) if self.answer is not None else (200, {})
        return web.Response(status=status, headers=extra)

    def of(self, path: str = "hook") -> list[Received]:
        return [r for r in self.received if r.path == path]


# -- the receiver as a process of its own ---------------------------------------------------


HEAD_END = b"\r\n\r\n"
REQUEST_LIMIT = 1 << 20  # bytes of one request, head and body, at most


def content_length(head: bytes) -> int:
    """A request head's ``Content-Length`` (0 without one); -1 for a head this receiver
    does not take (a chunked body, a length that is not a number)."""
    lower = head.lower()
    if b"\r\ntransfer-encoding:" in lower:
        return -1
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    end = lower.find(b"\r\n", at + 2)
    try:
        length = int(lower[at + 17 : end if end >= 0 else None])
    except ValueError:
        return -1
    return length if 0 <= length <= REQUEST_LIMIT else -1


def header_pairs(head: bytes) -> dict[str, str]:
    """A request head's headers (the request line left out), names in lower case."""
    found = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        found[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return found


def serve(port: int) -> None:
    """``python -m confab.bench.webhooks PORT``: a receiver on loopback at the lowest CPU
    priority, told its secrets by ``POST /_secrets/{path}`` (a JSON list) and asked what
    arrived by ``GET /_arrived`` (``[[path, webhook-id, seconds since it started,
    verified], …]``).

    It stands for a tenant's machine elsewhere but shares the two cores with the stack,
    so it is as lean as a receiver can be while it still verifies every signature with
    ``standardwebhooks``. It is a bare asyncio protocol, not an aiohttp application
    (which cost about 50 µs more per delivery, all taken from the stack being measured).
    It splits what arrives into requests by their heads' end and ``Content-Length``
    rather than through llhttp's callbacks (about ten Python calls a request: 15 µs of a
    delivery, against about 4 now), and takes what its clients send: HTTP/1.1 requests
    with a length, kept alive (a ``Connection: close`` is honoured; a chunked body is
    refused). What one read brings is answered in one write. A delivery is recorded as it
    arrives (its head and body kept as bytes) and verified when the bench asks what
    arrived, after the sends it measures.

    It runs in a session of its own, at the lowest priority of its own and of its session
    (``confab.priority``): with Linux's autogroups a process's nice value alone counts
    only within its session, and the receiver used to take a session's full share of the
    CPU beside the stack's services. Out of the bench's process group, it ends when its
    standard input does: when the bench closes it, or ends in any way."""
    import os
    import sys
    import threading

    import uvloop
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    from confab import priority

    started = time.monotonic()
    secrets: dict[str, list[Webhook]] = {}
    arrived: list[list[Any]] = []  # [path, webhook-id, at, verified]
    unverified: list[tuple[list[Any], bytes, bytes]] = []
    answering: set[asyncio.Task[None]] = set()

    async def verify() -> None:
        """Everything recorded so far, a slice at a time: deliveries still coming are read
        in between, so their arrival times are not held up."""
        while unverified:
            for item, head, raw in unverified[:200]:
                headers = header_pairs(head)
                item[1] = headers.get("webhook-id", "")
                for signer in secrets.get(item[0], ()):
                    try:
                        signer.verify(raw, headers, json_parse=False)
                    except WebhookVerificationError:
                        continue
                    item[3] = True
                    break
            del unverified[:200]
            await asyncio.sleep(0)

    def answer(status: str, body: bytes = b"") -> bytes:
        kind = "Content-Type: application/json\r\n" if body else ""
        return f"HTTP/1.1 {status}\r\n{kind}Content-Length: {len(body)}\r\n\r\n".encode() + body

    ok = answer("200 OK")
    bad = answer("400 Bad Request")

    class Connection(asyncio.Protocol):
        def __init__(self) -> None:
            self.buffer = b""

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            # Requests written ahead (pipelined) arrive together: answered in one write.
            buffer = self.buffer + data if self.buffer else data
            out: list[bytes] = []
            close = False
            at = 0
            while not close:
                end = buffer.find(HEAD_END, at)
                if end < 0:
                    close = len(buffer) - at > REQUEST_LIMIT
                    if close:
                        out.append(bad)
                    break
                head = buffer[at:end]
                length = content_length(head)
                if length < 0:
                    out.append(bad)
                    close = True
                    break
                start = end + 4
                if len(buffer) - start < length:
                    break  # the rest of its body comes in a later read
                at = start + length
                close = self.request(head, buffer[start:at], out)
            self.buffer = buffer[at:]
            if out:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            if close:
                self.transport.close()

        def request(self, head: bytes, body: bytes, out: list[bytes]) -> bool:
            """Answers ``head`` and ``body`` in ``out``; whether the connection ends."""
            line = head[: head.find(b"\r\n")] if b"\r\n" in head else head
            target = line.split(b" ")[1] if line.count(b" ") >= 2 else b"/"
            path = target.decode("latin-1").split("?", 1)[0].lstrip("/")
            lower = head.lower()
            closing = b"\r\nconnection: close" in lower or line.endswith(b"HTTP/1.0")
            if path.startswith("_secrets/"):
                secrets[path.removeprefix("_secrets/")] = [Webhook(s) for s in json.loads(body)]
                out.append(answer("204 No Content"))
            elif path == "_arrived":  # answered once verified (its own write)
                task = asyncio.get_running_loop().create_task(self.arrivals(closing))
                answering.add(task)
                task.add_done_callback(answering.discard)
                return False  # closed by ``arrivals`` if asked
            else:
                item = [path, "", time.monotonic() - started, False]
                arrived.append(item)
                unverified.append((item, head, body))
                out.append(ok)
            return closing

        async def arrivals(self, closing: bool) -> None:
            await verify()
            self.transport.write(answer("200 OK", json.dumps(arrived).encode()))
            if closing:
                self.transport.close()

    def until_the_bench_ends() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    async def main() -> None:
        threading.Thread(target=until_the_bench_ends, daemon=True).start()
        await priority.lower(19)
        loop = asyncio.get_running_loop()
        await loop.create_server(Connection, "127.0.0.1", port, reuse_address=True)
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())  # the least CPU taken from the stack it shares the machine with


@dataclass
class RemoteReceiver:
    """The bench's side of a receiver process (``serve``)."""

    http: aiohttp.ClientSession
    port: int
    process: Any = None
    started: float = 0.0
    secrets: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    async def start(cls, http: aiohttp.ClientSession) -> RemoteReceiver:
        import sys

        from confab_infra.backends import free_port

        port = free_port("127.0.0.1")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "confab.bench.webhooks",
            str(port),
            stdin=asyncio.subprocess.PIPE,  # its end ends the receiver
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # a session of its own, at the lowest priority (``serve``)
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError("the webhook receiver did not start")
        return cls(http, port, process, time.monotonic())

    def url(self, path: str = "hook") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def meter(self, info: dict[str, Any]) -> ProcessMeter:
        """The stack's processes, the load generator (without its children: the stack and
        this receiver are among them) and the receiver, each on its own line."""
        pids = {**with_generator(info["pids"]), RECEIVER: self.process.pid}
        return ProcessMeter(pids)

    async def tell(self, path: str, secrets: list[str]) -> None:
        async with self.http.post(f"{self.url('_secrets/' + path)}", json=secrets) as r:
            r.raise_for_status()

    async def arrived(self) -> list[Received]:
        async with self.http.get(self.url("_arrived")) as r:
            rows = await r.json()
        return [
            Received(path, mid, {}, {}, b"", self.started + at, verified)
            for path, mid, at, verified in rows
        ]

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def subscribe(
    http: aiohttp.ClientSession, base: str, api_key: str, url: str, event_types: list[str]
) -> dict[str, Any]:
    async with http.post(
        f"{base}/api/v1/webhooks",
        json={"url": url, "event_types": event_types},
        headers={"X-API-Key": api_key},
    ) as r:
        if r.status != 201:
            raise RuntimeError(f"creating a webhook answered {r.status}: {await r.text()}")
        return dict(await r.json())


async def _sends(
    http: aiohttp.ClientSession,
    info: dict[str, Any],
    args: Any,
    endpoints: int,
    receiver: RemoteReceiver,
) -> tuple[dict[str, Any], dict[str, float], Tally]:
    """One closed-loop send run on a fresh workspace with ``endpoints`` endpoints."""
    base = info["gateway_url"]
    space = await workspace(http, info, f"bench-webhooks-{endpoints}")
    tally = Tally()
    paths = []
    for i in range(endpoints):
        path = f"w{endpoints}-{i}"
        hook = await subscribe(http, base, space["api_key"], receiver.url(path), ["message.*"])
        await receiver.tell(path, [hook["secret"]])
        paths.append(path)
    rooms = await prepare(http, info, args.rooms, space=space)
    warm = Sender(http, base)
    await closed_loop(warm, rooms, min(args.workers, 16), args.warmup)
    sender = Sender(http, base)
    meter = receiver.meter(info)
    with meter, LoopLag() as lag:
        await closed_loop(sender, rooms, args.workers, args.seconds)
    ended = time.monotonic()
    messages = sum(warm.sent.values()) + sum(sender.sent.values())
    tally.expect(messages * endpoints)
    record = run_record(
        f"{endpoints} endpoints" if endpoints else "no endpoints",
        f"{args.workers} concurrent senders on {args.rooms} conversations for "
        f"{args.seconds:g} s, {endpoints} endpoints on message.*",
        unit="message",
        work=sender.ok,
        latencies=sender.latencies,
        meter=meter,
        lag=lag,
        loss={"sent": sender.ok, "received": sender.ok, "lost": 0, "duplicates": 0},
        errors={**warm.errors, **sender.errors},
    )
    return record, {"ended": ended, "messages": messages, "endpoints": endpoints}, tally


def alternating(pairs: int) -> list[int]:
    """How many endpoints each run has, pairs in ABBA order (0 3 3 0 0 3 …): drift over
    the stack's life (a growing database, a warming cache) counts against both sides."""
    order: list[int] = []
    for i in range(pairs):
        order += [0, 3] if i % 2 == 0 else [3, 0]
    return order


async def run(info: dict[str, Any], args: Any) -> list[dict[str, Any]]:
    connector = aiohttp.TCPConnector(limit=max(args.workers, 256))
    runs: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(connector=connector) as http:
        receiver = await RemoteReceiver.start(http)
        try:
            # A fresh stack's first run is its fastest: here the first baseline of a run of
            # three pairs was about a fifth above the other two in eight runs of ten. So
            # one run without endpoints goes first and is not counted.
            settling, _, _ = await _sends(http, info, args, 0, receiver)
            settling["run"] = "settling (not counted)"
            runs.append(settling)
            order = alternating(max(1, args.pairs))
            for i, endpoints in enumerate(order):
                first = len(await receiver.arrived())
                record, facts, tally = await _sends(http, info, args, endpoints, receiver)
                number = f" {order[: i + 1].count(endpoints)}" if len(order) > 2 else ""
                record["run"] += number
                runs.append(record)
                if endpoints:  # every delivery arrives before the next run starts
                    drained = await _drain(info, receiver, tally, facts, first)
                    drained["run"] += number
                    runs.append(drained)
        finally:
            await receiver.close()
    ratio = relative(runs)
    for record in runs:
        if record["run"].startswith("3 endpoints"):
            record["relative_to_baseline"] = ratio
    return runs


def relative(runs: list[dict[str, Any]]) -> float | None:
    """Sends with three endpoints over sends without: the mean of each side's runs."""
    base = [r["throughput_per_s"] for r in runs if r["run"].startswith("no endpoints")]
    loaded = [r["throughput_per_s"] for r in runs if r["run"].startswith("3 endpoints")]
    if not base or not loaded or not sum(base):
        return None
    return round((sum(loaded) / len(loaded)) / (sum(base) / len(base)), 3)


async def _drain(
    info: dict[str, Any],
    receiver: RemoteReceiver,
    tally: Tally,
    facts: dict[str, float],
    first: int,
) -> dict[str, Any]:
    """Wait (bounded) until every delivery of the loaded run has arrived; count them.
    Deliveries per second: from the first arrival to the last."""
    deadline = time.monotonic() + 300
    meter = receiver.meter(info)
    with meter:
        while True:
            arrived = (await receiver.arrived())[first:]
            if len({(r.path, r.message_id) for r in arrived}) >= tally.expected:
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    latencies = Latencies()
    unverified = 0
    for item in arrived:
        tally.arrive((item.path, item.message_id))
        unverified += not item.verified
    start = min((r.at for r in arrived), default=facts["ended"])
    done = max((r.at for r in arrived), default=facts["ended"])
    behind = max(0.0, done - facts["ended"])
    latencies.add(behind)
    return run_record(
        "deliveries",
        f"every message of the 3-endpoint run to its 3 endpoints ({tally.expected} deliveries)",
        unit="delivery",
        work=tally.unique,
        latencies=latencies,
        meter=meter,
        lag=None,
        loss=tally.counts(),
        errors={"unverified signature": unverified} if unverified else {},
        seconds=max(done - start, 1e-3),
        last_delivery_after_sends_s=round(behind, 2),
    )


def by_pair(runs: list[dict[str, Any]]) -> list[float]:
    """Each pair's run with endpoints over its own run without. The k-th run of each kind
    is in the k-th pair (ABBA), so each ratio compares runs minutes apart: how far these
    spread says how far the machine moved under the run, which one mean does not."""
    base = [r["throughput_per_s"] for r in runs if r["run"].startswith("no endpoints")]
    loaded = [r["throughput_per_s"] for r in runs if r["run"].startswith("3 endpoints")]
    return [round(w / wo, 3) for wo, w in zip(base, loaded, strict=False) if wo]


def targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ratio = relative(runs)
    if ratio is None:
        return []
    found = target(
        "sends-closed with 3 endpoints on message.*",
        ">= 90 % of the figure without",
        ratio,
        ratio >= 0.9,
    )
    pairs = by_pair(runs)
    if len(pairs) > 1:
        found["by_pair"] = pairs
        # Steadier than the mean when one minute of the machine was slow.
        found["pairs_median"] = round(statistics.median(pairs), 3)
    return [found]


if __name__ == "__main__":
    import sys

    serve(int(sys.argv[1]))
