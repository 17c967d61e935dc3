"""The loop-lag measure: a blocked loop is seen, and percentiles read back from two scrapes
of the histogram never understate what was observed."""

from __future__ import annotations

import asyncio
import gc
import time

from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest

from confab import looplag
from confab.bench.measure import LoopLag
from tests.waiting import until


async def test_a_blocked_loop_shows_as_lag_at_least_as_long_as_the_block() -> None:
    lags: list[float] = []
    running, seen = asyncio.Event(), asyncio.Event()

    def record(lag: float) -> None:
        lags.append(lag)
        running.set()
        if lag >= 0.04:
            seen.set()

    task = asyncio.get_running_loop().create_task(looplag.sample(record, 0.005))
    try:
        await asyncio.wait_for(running.wait(), 5)
        block_until = time.perf_counter() + 0.06  # the load under test: a long callback
        while time.perf_counter() < block_until:
            pass
        await asyncio.wait_for(seen.wait(), 5)
    finally:
        task.cancel()
    assert max(lags) >= 0.04
    assert min(lags) >= 0.0


def test_percentiles_are_of_what_happened_between_two_scrapes_at_bucket_edges() -> None:
    registry = CollectorRegistry()
    name = "confab_event_loop_lag_seconds"
    histogram = Histogram(name, "lag", buckets=looplag.BUCKETS, registry=registry)
    for _ in range(1000):
        histogram.observe(0.4)  # before the window: must not count
    before = looplag.buckets_of(generate_latest(registry).decode(), name)
    for _ in range(90):
        histogram.observe(0.0004)  # bucket ≤ 1 ms
    for _ in range(9):
        histogram.observe(0.012)  # bucket ≤ 15 ms
    histogram.observe(0.25)  # bucket ≤ 300 ms
    after = looplag.buckets_of(generate_latest(registry).decode(), name)
    got = looplag.percentiles(before, after, (0.5, 0.9, 0.99, 1.0))
    assert got == {
        "samples": 100,
        "p50_ms": 1.0,
        "p90_ms": 1.0,
        "p99_ms": 15.0,
        "p100_ms": 300.0,
    }


def test_no_samples_and_past_the_last_bucket_are_none_not_numbers() -> None:
    empty = looplag.percentiles({1.0: 5, float("inf"): 5}, {1.0: 5, float("inf"): 5})
    assert empty["samples"] == 0 and empty["p99_ms"] is None
    stalled = looplag.percentiles({}, {30.0: 0, float("inf"): 3})
    assert stalled["samples"] == 3 and stalled["p50_ms"] is None


async def test_the_generators_measure_reports_its_longest_lag_and_garbage_collection() -> None:
    """``confab bench``'s own LoopLag: one stall shows in its maximum, and a full
    garbage collection in its longest GC (one stall is below a 99th percentile)."""
    with LoopLag() as lag:
        await until(lambda: lag.lags, "the sampler's first sample")
        block_until = time.perf_counter() + 0.05
        while time.perf_counter() < block_until:
            pass
        gc.collect()
        # The sampler's timer, due during the block, fires late once the loop is free.
        await until(lambda: lag.max_ms() >= 35.0, "the block to show as lag")
    assert lag.max_ms() >= 35.0  # the 50 ms block, less up to one 10 ms sampling interval
    assert lag.gc_longest > 0.0


def test_every_garbage_collection_is_timed_by_generation() -> None:
    def full() -> float:
        found = REGISTRY.get_sample_value("confab_gc_pause_seconds_count", {"generation": "2"})
        return found or 0.0

    looplag.watch_collections()
    looplag.watch_collections()  # installed once, however often asked
    try:
        assert gc.callbacks.count(looplag._timed) == 1
        before = full()
        gc.collect()
        assert full() >= before + 1
    finally:
        gc.callbacks.remove(looplag._timed)
