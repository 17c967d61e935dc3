"""The bare cost of a JetStream append from Python: the send path's reference (issue 22).

A message sent through Confab ends in one append to ``CONVERSATIONS``; everything else
the stack spends on it (HTTP, auth, the decider, projections, fanout) is on top of that
append. To say how far the stack is from the floor, ``confab bench sends-closed``
measures, in the same run and on the same NATS server, what an append costs with
nothing around it: a process of its own (``python -m confab.bench.append``, on uvloop
as the services are) appends a ``message.posted`` event of the benchmark's size with
``confab.eventlog.append`` (the services' own function: headers, message id, expected
subject sequence), from as many concurrent appenders as the run had senders, each on
a subject of its own, to a scratch stream configured as the domain streams are
(``confab.bus.StreamSpec``). CPU per append is the appender's plus the NATS server's;
the stream is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any, TextIO

from confab import bus
from confab.bench.measure import ProcessMeter, outside_platform
from confab.contracts.events.messaging import MessagePosted
from confab.eventlog import append

STREAM = bus.StreamSpec("BENCH_APPEND", ("bench.append.>",))
APPENDER = "bare appender"


def _event(i: int) -> MessagePosted:
    return MessagePosted(
        conversation_id=f"conv_bench{i:06d}",
        seq=1,
        at=datetime.now(UTC),
        message_id=uuid.uuid4().hex,
        sender_id=f"usr_bench{i:06d}",
        content="bench message",
        client_msg_id=uuid.uuid4().hex,
    )


async def _appender(nats_url: str, seconds: float, concurrency: int, out: TextIO) -> dict[str, Any]:
    nc = await bus.connect(nats_url, f"bench-append-{os.getpid()}")
    js = nc.jetstream()
    await bus.ensure_streams(js, [STREAM])
    count = 0
    stop = asyncio.Event()

    async def worker(i: int) -> None:
        nonlocal count
        subject = f"bench.append.{i}"
        version = 0  # the subject's last sequence, as messaging expects it
        while not stop.is_set():
            appended = await append(
                js,
                STREAM.name,
                subject,
                _event(i),
                msg_id=uuid.uuid4().hex,
                workspace="ws_bench",
                expected_version=version,
            )
            version = appended.seq
            count += 1

    out.write("ready\n")
    out.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(seconds)  # the measured window (a load generator, not a test)
    stop.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    await js.delete_stream(STREAM.name)
    await bus.close(nc)
    return {"appends": count, "seconds": elapsed, "cpu_seconds": cpu}


def measure(info: dict[str, Any], seconds: float, concurrency: int) -> dict[str, Any]:
    """Run the appender beside the stack; its figures and the NATS server's CPU per append."""
    args = (seconds, concurrency)
    process = subprocess.Popen(
        [sys.executable, "-m", "confab.bench.append", info["nats_url"], *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the bare appender did not start")
        nats_pid = info["pids"].get("nats")
        meter = ProcessMeter({"nats": nats_pid} if nats_pid else {}, alone=("nats",))
        with meter:
            process.stdin.write("go\n")
            process.stdin.flush()
            found = json.loads(process.stdout.readline())
    finally:
        process.wait(30)
    appends = max(1, found["appends"])
    client = found["cpu_seconds"] * 1e6 / appends
    server = meter.cpu.get("nats", 0.0) * 1e6 / appends
    return {
        "appends": found["appends"],
        "concurrency": concurrency,
        "appends_per_s": round(found["appends"] / found["seconds"], 1),
        "client_cpu_us": round(client, 2),
        "nats_cpu_us": round(server, 2),
        "cpu_us": round(client + server, 2),
    }


def stack_cpu_us(record: dict[str, Any]) -> float:
    """The platform's CPU per message in a run: every process but generators and receivers."""
    return sum(
        p["cpu_us_per_unit"] or 0.0
        for name, p in record["processes"].items()
        if not outside_platform(name)
    )


def compare(record: dict[str, Any], bare: dict[str, Any]) -> None:
    """Add the stack's CPU per message, and that over a bare append's, to a run record."""
    stack = stack_cpu_us(record)
    record["stack_cpu_us_per_message"] = round(stack, 1)
    record["bare_append"] = bare
    record["stack_over_bare_append"] = round(stack / bare["cpu_us"], 2) if bare["cpu_us"] else None


def _main() -> None:
    import uvloop

    # Standard output carries the protocol (``ready``, then the figures); anything else
    # printed (logs) goes to standard error.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    nats_url, seconds, concurrency = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    found = uvloop.run(_appender(nats_url, seconds, concurrency, out))
    out.write(json.dumps(found) + "\n")
    out.flush()


if __name__ == "__main__":
    _main()
