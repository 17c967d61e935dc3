"""Idle connection capacity: N Pusher connections held open on one fanout process.

Opens ``--connections`` sockets (each subscribed to one of ``--channels``
public channels), holds them for ``--seconds`` answering the server's pings,
and reports the fanout's memory per connection (its RSS growth), its CPU while
they idle, and whether every one stayed connected: a socket closed before the
end is a lost connection. Works against any Pusher server (``--fanout-url`` and
the app options of the fanout scenario).

Each connection is a file descriptor on both sides, so this process raises its
own open-files limit, and when it starts the stack the fanout inherits it.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from typing import Any

import aiohttp
import psutil

from confab.bench.fanout import (
    CpuSplit,
    Recorder,
    Socket,
    Target,
    bounded,
    connect,
    resolve_target,
    server_rss,
    settled,
)
from confab.bench.measure import GENERATOR, Latencies, LoopLag, ProcessMeter, open_files_limit
from confab.bench.result import Tally, add_error, run_record, scenario_result, target

SPARE_FILES = 256  # descriptors a process needs besides the connections


def check_limit(target: Target, connections: int) -> str | None:
    """Why the server may refuse connections before ``connections``, if it will."""
    limit = open_files_limit(target.pid) if target.pid else None
    if limit is not None and limit < connections + SPARE_FILES:
        return (
            f"the fanout (pid {target.pid}) may open only {limit} files, fewer than "
            f"{connections} connections need; start it with a higher limit (ulimit -n)"
        )
    return None


async def _connections(http: aiohttp.ClientSession, target: Target) -> int | None:
    """Open connections as a Confab fanout counts them (/healthz), or None elsewhere."""
    try:
        async with http.get(f"{target.http_url}/healthz") as r:
            return int((await r.json(content_type=None))["connections"])
    except (aiohttp.ClientError, ValueError, KeyError, TypeError):
        return None


def _capped(wanted: int) -> tuple[int, str | None]:
    """As many connections as this process may open files for, and why fewer, if fewer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    allowed = soft - SPARE_FILES
    if wanted <= allowed:
        return wanted, None
    return allowed, (
        f"this process may open only {soft} files (hard limit {hard}, not raised: no "
        f"privilege), so it opens {allowed} connections, not {wanted}"
    )


async def run(info: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    connections, capped = _capped(args.connections)
    if capped:
        print(f"confab bench idle: {capped}", file=sys.stderr)
    async with aiohttp.ClientSession() as http:
        fanout, _ = await resolve_target(http, info, args)
        warning = check_limit(fanout, connections)
        if warning:
            print(f"confab bench idle: {warning}", file=sys.stderr)
        recorder = Recorder()
        latencies = Latencies()
        errors: dict[str, int] = {}
        pids = {GENERATOR: psutil.Process().pid}
        if fanout.pid:
            pids["fanout"] = fanout.pid
        await settled(http, fanout)
        before = server_rss(fanout.pid)

        async def open_one(i: int) -> Socket | None:
            t0 = time.perf_counter()
            try:
                sock = await connect(fanout, recorder, i)
                await sock.subscribe(f"idle-{i % args.channels}")
            except (OSError, ConnectionError, TimeoutError) as exc:
                add_error(errors, type(exc).__name__)
                return None
            latencies.add(time.perf_counter() - t0)
            return sock

        meter = ProcessMeter(pids, alone=tuple(pids))
        with meter, LoopLag() as lag:
            opened = await bounded([open_one(i) for i in range(connections)], 200)
        sockets = [s for s in opened if s is not None]
        # Held idle: the server pings, the sockets answer; CPU and memory at rest.
        with CpuSplit(fanout.pid) as idle_cpu:
            held = time.perf_counter()
            await asyncio.sleep(args.seconds)
            held = time.perf_counter() - held
        after = server_rss(fanout.pid)
        counted_by_server = await _connections(http, fanout)
        tally = Tally()
        tally.expect(connections)
        for s in sockets:
            if s.transport is not None and not s.transport.is_closing() and s.ready.done():
                tally.arrive(s.no)
        for s in sockets:
            if s.transport is not None:
                s.transport.close()
        await settled(http, fanout)
    open_at_end = tally.unique
    kb = round((after - before) / open_at_end / 1024, 2) if fanout.pid and open_at_end else None
    record = run_record(
        f"{connections} connections",
        f"{connections} Pusher connections on {args.channels} channels of one fanout "
        f"process, opened 200 at a time, then held idle for {args.seconds:g} s "
        "(latency: connect and subscribe; throughput: connections opened per second)",
        unit="connection",
        work=len(sockets),
        latencies=latencies,
        meter=meter,
        lag=lag,
        loss=tally.counts(),
        errors=errors,
        connected_at_end=open_at_end,
        connected_per_server=counted_by_server,
        server_rss_mb_before=round(before / 2**20, 1),
        server_rss_mb_after=round(after / 2**20, 1),
        kb_per_connection=kb,
        idle_seconds=round(held, 1),
        fanout_idle_cpu_share=round((idle_cpu.user + idle_cpu.system) / held, 4)
        if fanout.pid and held
        else None,
        open_files_warning=warning,
        connections_requested=args.connections,
        generator_limit=capped,
    )
    return scenario_result(
        "idle",
        [record],
        [
            target(
                "idle sockets on one fanout process",
                ">= 20,000",
                open_at_end,
                open_at_end >= 20_000 and record["lost"] == 0,
            )
        ],
        target={"url": fanout.http_url, "app_id": fanout.app_id, "server_pid": fanout.pid},
        highlights=[
            f"{open_at_end} of {connections} connected at the end "
            f"(the server counted {counted_by_server}); {kb} KB each "
            f"(server RSS {record['server_rss_mb_before']} → {record['server_rss_mb_after']} MB); "
            f"fanout CPU while idle {record['fanout_idle_cpu_share']} cores"
        ],
    )
