"""How late an event loop runs: a timer that should fire every ``interval``, and by how much
it fired late.

A loop that is late by *d* delays by about *d* every frame, reply and delivery that
became ready meanwhile, so this is the tail a process adds on its own (a long
callback, a garbage collection, a burst of writes). ``sample`` is the one measure:
every service records it into ``EVENT_LOOP_LAG`` (``/metrics``, started by
``confab.service`` every ``loop_lag_interval`` seconds), and the load generators of
``confab bench`` into a list.

``percentiles`` reads the histogram back as an operator (or ``confab bench fanout``)
would: the difference of two scrapes, with a percentile taken at the upper edge of
the bucket it falls in, so it never understates a lag.

One cause of lag gets a measure of its own: every garbage collection, timed by
generation into ``GC_PAUSE`` (``watch_collections``, installed by ``confab.service``
once a service has started and frozen its start-up heap). Full collections that walked
that heap were the 60 to 160 ms tail of session 12 (bench/README.md).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterable

from prometheus_client import Histogram

# Ten wake-ups a second. On this machine (a VM) waking an idle process costs about 0.1 ms
# of CPU, so 40 a second cost each service 0.4 % of a core: a service's setting
# (``loop_lag_interval``, ``CONFAB_LOOP_LAG_INTERVAL``) makes it finer where wanted.
INTERVAL_SECONDS = 0.1
BUCKETS = (
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    10.0,
    30.0,
)
EVENT_LOOP_LAG = Histogram(
    "confab_event_loop_lag_seconds",
    "How late this process's event loop ran a timer due every loop_lag_interval seconds",
    buckets=BUCKETS,
)


GC_PAUSE = Histogram(
    "confab_gc_pause_seconds",
    "How long each garbage collection stopped this process, by generation",
    ["generation"],
    buckets=BUCKETS,
)
_GC_OBSERVE = [GC_PAUSE.labels(str(generation)).observe for generation in range(3)]
_gc_started = 0.0


def _timed(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        _GC_OBSERVE[info["generation"]](time.perf_counter() - _gc_started)


def watch_collections() -> None:
    """Time this process's garbage collections into ``GC_PAUSE`` (once, however often
    called): a few microseconds a collection."""
    if _timed not in gc.callbacks:
        gc.callbacks.append(_timed)


async def sample(record: Callable[[float], None], interval: float = INTERVAL_SECONDS) -> None:
    """Record, until cancelled, how late a timer due every ``interval`` fires (seconds)."""
    clock = time.perf_counter
    while True:
        start = clock()
        await asyncio.sleep(interval)
        record(max(0.0, clock() - start - interval))


def start(
    loop: asyncio.AbstractEventLoop | None = None, interval: float = INTERVAL_SECONDS
) -> asyncio.Task[None]:
    """This process's loop lag into ``EVENT_LOOP_LAG``, until the task is cancelled."""
    loop = loop or asyncio.get_running_loop()
    return loop.create_task(sample(EVENT_LOOP_LAG.observe, interval), name="event-loop-lag")


Buckets = dict[float, float]  # upper bound (seconds) → cumulative count


def buckets_of(exposition: str, name: str = "confab_event_loop_lag_seconds") -> Buckets:
    """The cumulative buckets of histogram ``name`` in a Prometheus exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    found: Buckets = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != name:
            continue
        for s in family.samples:
            if s.name == f"{name}_bucket":
                bound = float(s.labels["le"])
                found[bound] = found.get(bound, 0.0) + s.value
    return found


def percentiles(
    before: Buckets, after: Buckets, qs: Iterable[float] = (0.5, 0.9, 0.99)
) -> dict[str, float | None]:
    """Percentiles (ms, at the upper edge of their bucket) of what was observed between two
    scrapes, and how many samples; ``None`` without samples, or past the largest bucket
    (30 s: a process that stalled that long is not running)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    out: dict[str, float | None] = {"samples": total}
    for q in qs:
        key = f"p{round(q * 100):d}_ms"
        if total <= 0:
            out[key] = None
            continue
        rank = q * total
        edge = next(b for b, c in zip(bounds, counts, strict=True) if c >= rank)
        out[key] = edge * 1000.0 if edge != float("inf") else None
    return out
