"""``confab bench peers``: Soketi and Confab under the same load, back to back, with ratios.

A fanout figure means little alone, so this runs the ``fanout`` and ``idle`` scenarios
(the same harness, the same arguments: it speaks plain Pusher protocol to either
server) first against Soketi, then against a fresh local Confab stack, and writes
``peers.json``: both servers' runs, and for each figure the ratio Confab ÷ Soketi (below
1, Confab needs less; above, more). ``confab bench report`` draws the ratios.

Soketi is the peer issue 22 names: version 1.6.1 from npm, installed in ``bench/peers``
by ``make bench-peers`` and started here as its documentation starts it (one Node
process, ``soketi start``, its default app, metrics off, on a free loopback port). Its
package names uWebSockets.js by a GitHub address, which no package registry serves, so
``bench/peers/package.json`` points that name at an npm build of the same library
(``@trufflesuite/uws-js-unofficial`` 20.30, with binaries for Node 20).

Only the Pusher server differs between the two halves: the load generator, the machine
and the arguments are the same, and Soketi's CPU and memory are read from its process as
Confab's fanout's are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confab.bench import fanout, idle
from confab.bench.result import scenario_result, target
from confab.bench.stack import local_stack, stop

SOKETI = Path("node_modules/@soketi/soketi/bin/server.js")
READY_TIMEOUT = 30.0
APP = {"app_id": "bench", "app_key": "bench-key", "app_secret": "bench-secret"}


class PeerMissing(Exception):
    """Soketi is not installed where it was looked for."""


@dataclass(frozen=True)
class Peer:
    url: str
    pid: int


def soketi_server(peers_dir: Path) -> Path:
    """The Soketi entry point under ``peers_dir``, or ``PeerMissing`` saying how to get it."""
    server = peers_dir / SOKETI
    if not server.is_file():
        raise PeerMissing(
            f"Soketi is not installed in {peers_dir}: run `make bench-peers`, or "
            f"`npm ci` in {peers_dir}, first"
        )
    return server


@contextlib.contextmanager
def running_soketi(server: Path) -> Iterator[Peer]:
    """Soketi on a free loopback port until the block ends (then stopped as Ctrl-C would)."""
    from confab_infra.ports import free_port

    port = free_port()
    env = {
        **os.environ,
        "SOKETI_HOST": "127.0.0.1",
        "SOKETI_PORT": str(port),
        "SOKETI_METRICS_ENABLED": "false",
        "SOKETI_DEFAULT_APP_ID": APP["app_id"],
        "SOKETI_DEFAULT_APP_KEY": APP["app_key"],
        "SOKETI_DEFAULT_APP_SECRET": APP["app_secret"],
    }
    log = Path(tempfile.mkstemp(prefix="confab-bench-soketi-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["node", str(server), "start"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield Peer(url=url, pid=process.pid)
    finally:
        stop(process, timeout=15)
        log.unlink(missing_ok=True)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Soketi exited with {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"Soketi did not answer {url}/ready within {READY_TIMEOUT:.0f} s")


def _both(info: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "fanout": asyncio.run(fanout.run(info, args)),
        "idle": asyncio.run(idle.run(info, args)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    server = soketi_server(args.peers_dir)
    with running_soketi(server) as peer:
        against = argparse.Namespace(
            **{
                **vars(args),
                "fanout_url": peer.url,
                "fanout_pid": peer.pid,
                **APP,
            }
        )
        soketi = _both({}, against)
    with local_stack(args.target) as info:
        confab = _both(info, args)
    rows = ratios(confab, soketi)
    runs = [
        {**r, "run": f"{server_name} {scenario} {r['run']}"}
        for server_name, results in (("soketi", soketi), ("confab", confab))
        for scenario, result in results.items()
        for r in result["runs"]
    ]
    return scenario_result(
        "peers",
        runs,
        peer_targets(rows),
        soketi={"url": peer.url, "version": "1.6.1", "results": soketi},
        confab={"results": confab},
        ratios=rows,
        highlights=[
            f"{row['figure']}: Confab {row['confab']}, Soketi {row['soketi']}: "
            f"ratio {row['ratio'] if row['ratio'] is not None else '-'}"
            for row in rows
        ],
    )


def _ratio(confab: float | None, soketi: float | None) -> float | None:
    if confab is None or not soketi:
        return None
    return round(confab / soketi, 2)


def _row(figure: str, confab: float | None, soketi: float | None) -> dict[str, Any]:
    return {"figure": figure, "confab": confab, "soketi": soketi, "ratio": _ratio(confab, soketi)}


def ratios(
    confab: dict[str, dict[str, Any]], soketi: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Confab ÷ Soketi for each figure both runs measured: per HTTP API rate, the CPU per
    delivery, the p99 delivery latency and the deliveries per second; the memory per
    subscribed socket (fanout) and per idle connection (idle)."""
    rows = []
    theirs = {r["run"]: r for r in soketi["fanout"]["runs"]}
    for ours in confab["fanout"]["runs"]:
        peer = theirs.get(ours["run"])
        if peer is None or not ours["run"].startswith("api-"):
            continue  # the sends run needs Confab's own API: it has no peer
        name = ours["run"]
        rows.append(
            _row(
                f"{name}: CPU µs per delivery",
                ours["fanout_cpu_us_per_delivery"],
                peer["fanout_cpu_us_per_delivery"],
            )
        )
        rows.append(_row(f"{name}: p99 ms", ours["latency"]["p99_ms"], peer["latency"]["p99_ms"]))
        rows.append(
            _row(f"{name}: deliveries per s", ours["delivered_per_s"], peer["delivered_per_s"])
        )
    rows.append(
        _row(
            "KB per subscribed socket (fanout)",
            confab["fanout"]["idle"]["kb_per_idle_connection"],
            soketi["fanout"]["idle"]["kb_per_idle_connection"],
        )
    )
    ours_idle, peer_idle = confab["idle"]["runs"][0], soketi["idle"]["runs"][0]
    rows.append(
        _row(
            "KB per idle connection (idle)",
            ours_idle["kb_per_connection"],
            peer_idle["kb_per_connection"],
        )
    )
    return rows


def peer_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 22's goals against the peer: CPU and p99 no more than Soketi's, memory per
    socket no more than 1.5 times."""
    goals = (
        ("CPU µs per delivery", "fanout CPU per delivery ÷ Soketi's", 1.0),
        ("p99 ms", "fanout p99 delivery latency ÷ Soketi's", 1.0),
        ("KB per ", "memory per connection ÷ Soketi's", 1.5),
    )
    out = []
    for part, what, limit in goals:
        measured = [r["ratio"] for r in rows if part in r["figure"]]
        worst = max((m for m in measured if m is not None), default=None)
        out.append(target(what, f"<= {limit:g}", worst, None if worst is None else worst <= limit))
    return out
