"""``confab up`` cold start: a fresh data directory to ``confab: ready`` and to a first API call.

Each of ``--starts`` runs launches ``confab up`` on a new, empty data directory
(so PostgreSQL's cluster is initialised, streams and schemas are created and
the demo workspace is made), and meanwhile calls ``GET /api/admin/workspaces``
every 20 ms until it answers 200. Latency is the time to ``confab: ready``;
``first_api_call`` the time to that first 200. Each process's CPU seconds and
peak RSS are read from the OS at ready: all of it is what starting cost.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from confab.bench.measure import GENERATOR, Latencies, ProcessMeter
from confab.bench.result import Tally, add_error, run_record, scenario_result
from confab.bench.stack import READY, READY_TIMEOUT, launch, stack_pids, stop

POLL = 0.02


class FirstCall(threading.Thread):
    """Calls the admin API until it first answers 200; remembers when."""

    def __init__(self, url: str, token: str, started: float) -> None:
        super().__init__(daemon=True)
        self.request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        self.started = started
        self.after: float | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                with urllib.request.urlopen(self.request, timeout=2) as r:
                    if r.status == 200:
                        self.after = time.perf_counter() - self.started
                        return
            except (urllib.error.URLError, OSError):
                pass
            self.halt.wait(POLL)


def _one(ready: Latencies, first: Latencies, errors: dict[str, int]) -> dict[str, Any] | None:
    """One cold start; each process's lifetime CPU and peak memory at ready."""
    from confab_infra.backends import free_port

    data_dir = Path(tempfile.mkdtemp(prefix="confab-bench-cold-"))
    port, token = free_port(), secrets.token_urlsafe(24)
    started = time.perf_counter()
    process, lines = launch(data_dir, port, f"--admin-token={token}")
    caller = FirstCall(f"http://127.0.0.1:{port}/api/admin/workspaces", token, started)
    caller.start()
    try:
        if not lines.wait_for(READY, READY_TIMEOUT):
            add_error(errors, "not ready")
            return None
        ready.add(time.perf_counter() - started)
        pids = {**stack_pids(data_dir, process), "confab up": process.pid}
        costs = ProcessMeter(pids, alone=("confab up",)).lifetime()
        caller.join(READY_TIMEOUT)  # ready means the gateway answers: this is short
        if caller.after is None:
            add_error(errors, "no API answer")
            return None
        first.add(caller.after)
        return costs
    finally:
        caller.halt.set()
        stop(process)
        shutil.rmtree(data_dir, ignore_errors=True)


def run(starts: int) -> dict[str, Any]:
    ready, first = Latencies(), Latencies()
    errors: dict[str, int] = {}
    tally = Tally()
    per_process: dict[str, list[dict[str, float]]] = {}
    meter = ProcessMeter({GENERATOR: psutil.Process().pid})
    with meter:
        for n in range(starts):
            tally.expect()
            costs = _one(ready, first, errors)
            if costs is None:
                continue
            tally.arrive(n)
            for name, cost in costs.items():
                per_process.setdefault(name, []).append(cost)
    done = tally.unique
    record = run_record(
        f"{starts} starts",
        f"{starts} cold starts of confab up, each on a new data directory, one at a time "
        "(latency: launch → confab: ready; a lost item is a start that never answered)",
        unit="start",
        work=done,
        latencies=ready,
        meter=meter,
        lag=None,
        loss=tally.counts(),
        errors=errors,
        first_api_call=first.summary(),
    )
    mean_ready = sum(ready.values) / len(ready.values) if ready.values else 0.0
    for name, costs in per_process.items():
        cpu = sum(c["cpu_seconds"] for c in costs) / len(costs)
        record["processes"][name] = {
            "cpu_seconds": round(cpu, 3),
            "cpu_us_per_unit": round(cpu * 1e6, 0),
            "cpu_share": round(cpu / mean_ready, 3) if mean_ready else 0.0,
            "peak_rss_mb": round(max(c["peak_rss_mb"] for c in costs), 1),
        }
    p50 = record["latency"]["p50_ms"]
    return scenario_result(
        "coldstart",
        [record],
        [],
        highlights=[
            f"ready p50 {p50} ms, first API call p50 {first.summary()['p50_ms']} ms; "
            "per process: CPU seconds and peak RSS of one start"
        ],
    )
