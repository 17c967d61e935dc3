"""The send path's floor: the architecture's bare skeleton, measured (issue 22).

Whatever Confab does with a message, the architecture makes it cross the same parts:
an HTTP request into the gateway, a NATS request to messaging, one JetStream append,
the reply and the HTTP answer, then a delivery to every durable consumer of
``CONVERSATIONS`` (the projections of messaging, media, the notifier and the webhooks:
six in a ``confab up`` stack). ``confab bench floor`` runs that skeleton with nothing
of Confab's in it, on the stack's own NATS server, driven by the senders of
``sends-closed`` (``confab.bench.sends.Sender``: the widget's send request, its path,
token and body):

- ``gateway``: aiohttp on uvloop with one route, the widget's send path. It reads the
  body, decodes it with msgspec, sends it on with one NATS request and answers the
  reply as a 201;
- ``command``: a queue subscriber handling each request in a task of its own, as
  ``confab.rpc.RpcServer`` does. It appends a ``message.posted`` event with
  ``confab.eventlog.append`` (headers, message id, expected subject sequence kept in
  memory, as messaging's aggregate cache keeps it) and replies with the sequence;
- ``readers``: one process with as many durable pull consumers as the stack has on
  ``CONVERSATIONS`` (``READERS``; ``--readers`` for another count), acknowledge-all,
  each fetching batches with ``confab.projection.pull.fetch`` and opening every message
  as the runners do
  (``confab.projection.open_message``: headers, body, place).

No PostgreSQL, no authentication, no decider, no encryption, no fold. What the stack
spends on a message beyond this skeleton is what Confab's own code costs; the skeleton
itself is what the architecture costs with the libraries it names (aiohttp, nats-py)
before any of that. It runs busy (64 senders by default), where its parts are
cheapest per message (bench/README.md, session 14). The measured
window runs from the first send until every reader has acknowledged every append, so
a reader behind at the end is counted. Every append must reach every reader once:
the run reports any difference as lost (or duplicated) messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import aiohttp
import msgspec
from aiohttp import web
from nats.js.errors import NotFoundError

from confab import bus
from confab.bench import append as bare
from confab.bench.measure import LoopLag, ProcessMeter, with_generator
from confab.bench.result import counted, run_record, target
from confab.bench.sends import Room, Sender, closed_loop
from confab.contracts.events.messaging import MessagePosted
from confab.eventlog import append
from confab.projection import open_message
from confab.projection.consumer import subscribe_from
from confab.projection.pull import fetch

STREAM = bus.StreamSpec("BENCH_FLOOR", ("bench.floor.>",))
POST = "bench_floor.post"  # outside the stream's subjects
READERS = 6  # durable consumers of ``conv.evt.>`` in a ``confab up`` stack
READ_BATCH = 256  # the runners' default batch
ROLES = ("command", "readers", "gateway")
PARTS = {role: f"floor {role}" for role in ROLES}


@dataclass(frozen=True)
class Source:
    """The scratch stream, as ``confab.projection.consumer.subscribe_from`` reads it."""

    stream: str
    subjects: tuple[str, ...]


class Body(msgspec.Struct):
    content: str
    client_msg_id: str = ""


class Command(msgspec.Struct):
    conversation_id: str
    content: str
    client_msg_id: str


class Posted(msgspec.Struct):
    id: str
    conversation_id: str
    seq: int


# -- the parts, each a process of its own (``python -m confab.bench.floor ROLE NATS_URL``)


async def _gateway(nats_url: str, out: TextIO) -> None:
    nc = await bus.connect(nats_url, "bench-floor-gateway")
    body_decoder = msgspec.json.Decoder(Body)
    encode = msgspec.json.encode

    async def send(request: web.Request) -> web.Response:
        body = body_decoder.decode(await request.read())
        command = Command(request.match_info["conversation_id"], body.content, body.client_msg_id)
        reply = await nc.request(POST, encode(command), timeout=5.0)
        return web.Response(body=reply.data, status=201, content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/widget/conversations/{conversation_id}/messages", send)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    _say(out, {"url": f"http://127.0.0.1:{port}"})
    await _until_told()
    await runner.cleanup()
    await bus.close(nc)


async def _command(nats_url: str, out: TextIO) -> None:
    nc = await bus.connect(nats_url, "bench-floor-command")
    js = nc.jetstream()
    decoder = msgspec.json.Decoder(Command)
    versions: dict[str, int] = {}
    turns: dict[str, asyncio.Lock] = {}  # one append at a time per subject, as messaging's
    tasks: set[asyncio.Task[None]] = set()
    appended = 0

    async def handle(msg: Any) -> None:
        nonlocal appended
        command = decoder.decode(msg.data)
        subject = f"bench.floor.ws_bench.{command.conversation_id}"
        event = MessagePosted(
            conversation_id=command.conversation_id,
            seq=1,
            at=datetime.now(UTC),
            message_id=uuid.uuid4().hex,
            sender_id="usr_bench",
            content=command.content,
            client_msg_id=command.client_msg_id,
        )
        async with turns.setdefault(subject, asyncio.Lock()):
            done = await append(
                js,
                STREAM.name,
                subject,
                event,
                msg_id=uuid.uuid4().hex,
                workspace="ws_bench",
                expected_version=versions.get(subject, 0),
            )
            versions[subject] = done.seq
        appended += 1
        await msg.respond(
            msgspec.json.encode(Posted(event.message_id, command.conversation_id, done.seq))
        )

    async def on_message(msg: Any) -> None:
        task = asyncio.create_task(handle(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await nc.subscribe(POST, queue="floor", cb=on_message)
    _say(out, {})
    await _until_told()
    _say(out, {"appended": appended})
    await bus.close(nc)


async def _readers(nats_url: str, out: TextIO, readers: int) -> None:
    nc = await bus.connect(nats_url, "bench-floor-readers")
    js = nc.jetstream()
    counts = [0] * readers
    source = Source(STREAM.name, STREAM.subjects)
    subs = [
        await subscribe_from(js, source, f"floor_reader_{i}", 1, READ_BATCH) for i in range(readers)
    ]
    stop = asyncio.Event()

    async def read(i: int) -> None:
        while not stop.is_set():
            try:
                msgs = await fetch(subs[i], READ_BATCH, 0.5)
            except TimeoutError:
                continue
            for msg in msgs:
                open_message(msg)
            counts[i] += len(msgs)
            await msgs[-1].ack()

    tasks = [asyncio.create_task(read(i)) for i in range(readers)]
    _say(out, {})
    await _until_told()
    stop.set()
    await asyncio.gather(*tasks)
    _say(out, {"read": counts})
    await bus.close(nc)


def _say(out: TextIO, what: dict[str, Any]) -> None:
    out.write(json.dumps(what) + "\n")
    out.flush()


async def _until_told() -> None:
    """Serve until the bench writes a line on standard input."""
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


# -- the run -------------------------------------------------------------------------


class Part:
    """One process of the skeleton, spoken to by lines of JSON on its standard streams."""

    def __init__(self, role: str, nats_url: str, *args: str) -> None:
        self.role = role
        self.name = PARTS[role]
        self.nats_url = nats_url
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> dict[str, Any]:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "confab.bench.floor",
            self.role,
            self.nats_url,
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return await self._line()

    async def finish(self) -> dict[str, Any]:
        """Tell it to stop; what it says last."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(b"stop\n")
        await self.process.stdin.drain()
        found = await self._line() if self.role != "gateway" else {}
        await asyncio.wait_for(self.process.wait(), 30)
        return found

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    async def _line(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"the skeleton's {self.role} process ended before answering")
        return dict(json.loads(line))


async def run(
    info: dict[str, Any],
    seconds: float,
    workers: int,
    rooms: int,
    warmup: float = 1.0,
    readers: int = READERS,
) -> dict[str, Any]:
    """One closed-loop run of the skeleton on the stack's NATS server (the stack idle)."""
    nc = await bus.connect(info["nats_url"], "bench-floor")
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):  # left by a run that was killed
        await js.delete_stream(STREAM.name)
    await bus.ensure_streams(js, [STREAM])
    parts = [
        Part(role, info["nats_url"], *([str(readers)] if role == "readers" else []))
        for role in ROLES
    ]
    try:
        said = {part.role: await part.start() for part in parts}
        base = said["gateway"]["url"]
        room_list = [Room(f"conv_floor{i:04d}", "floor-token", []) for i in range(rooms)]
        connector = aiohttp.TCPConnector(limit=max(workers, 256))
        async with aiohttp.ClientSession(connector=connector) as http:
            sender, warm = Sender(http, base), Sender(http, base)
            await closed_loop(warm, room_list, min(workers, 16), warmup)
            await _caught_up(js, (await js.stream_info(STREAM.name)).state.last_seq, readers)
            pids = {part.name: part.process.pid for part in parts if part.process}
            nats_pid = info["pids"].get("nats")
            meter = ProcessMeter(
                {**with_generator(pids), **({"nats": nats_pid} if nats_pid else {})},
                alone=("nats",),
            )
            with meter, LoopLag() as lag:
                await closed_loop(sender, room_list, workers, seconds)
                await _caught_up(js, (await js.stream_info(STREAM.name)).state.last_seq, readers)
        found = {part.role: await part.finish() for part in parts}
    finally:
        for part in parts:
            part.kill()
        with contextlib.suppress(Exception):
            await js.delete_stream(STREAM.name)
        await bus.close(nc)
    # Every append reached every reader once (the warm-up's too); sent and received
    # count messages: those appended, and those every reader read.
    appended, read = found["command"]["appended"], found["readers"]["read"]
    loss = counted(dict.fromkeys(range(readers), appended), dict(enumerate(read)))
    loss.update(sent=appended, received=min(read))
    record = run_record(
        f"{workers} senders, skeleton",
        f"{workers} concurrent senders on {rooms} conversations for {seconds:g} s, through "
        f"the skeleton (HTTP, a NATS request, an append, {readers} readers)",
        unit="message",
        work=sender.ok,
        latencies=sender.latencies,
        meter=meter,
        lag=lag,
        loss=loss,
        errors={**warm.errors, **sender.errors},
        readers=readers,
    )
    # Everything measured but the load generator: as ``sends-closed`` sums the stack.
    record["floor_cpu_us_per_message"] = round(bare.stack_cpu_us(record), 1)
    return record


async def _caught_up(js: Any, last_seq: int, readers: int, timeout: float = 60.0) -> None:
    """Return once every reader has acknowledged everything up to ``last_seq``."""
    deadline = time.monotonic() + timeout
    while True:
        infos = [await js.consumer_info(STREAM.name, f"floor_reader_{i}") for i in range(readers)]
        floors = [i.ack_floor.stream_seq for i in infos]
        if min(floors) >= last_seq:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the skeleton's readers stopped at {min(floors)} of {last_seq}")
        await asyncio.sleep(0.02)  # polling the server: a bench, not a test


def targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whether the skeleton alone fits issue 22's send-path targets for the whole stack."""
    if not runs:
        return []
    floor = min(r["floor_cpu_us_per_message"] for r in runs)
    best = max(r["throughput_per_s"] for r in runs)
    return [
        target("the bare skeleton's CPU per message", "<= 350 µs (the stack's)", floor,
               floor <= 350),
        target("the bare skeleton's sends on 2 cores", ">= 3,000 messages/s (the stack's)", best,
               best >= 3000),
    ]  # fmt: skip


def _main() -> None:
    import uvloop

    # Standard output carries the protocol; anything else printed goes to standard error.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    role, nats_url = sys.argv[1], sys.argv[2]
    if role == "readers":
        uvloop.run(_readers(nats_url, out, int(sys.argv[3])))
    else:
        uvloop.run({"gateway": _gateway, "command": _command}[role](nats_url, out))


if __name__ == "__main__":
    _main()
