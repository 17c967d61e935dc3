"""What a run records: latencies, and each process's CPU seconds and peak memory from the OS."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


@dataclass
class Latencies:
    values: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    def summary(self) -> dict[str, float]:
        v = sorted(self.values)
        ms = 1000.0
        return {
            "count": len(v),
            "p50_ms": round(percentile(v, 0.50) * ms, 3),
            "p90_ms": round(percentile(v, 0.90) * ms, 3),
            "p99_ms": round(percentile(v, 0.99) * ms, 3),
            "max_ms": round((v[-1] if v else 0.0) * ms, 3),
        }


class ProcessMeter:
    """CPU seconds used during a window, and peak RSS sampled every 100 ms, per named process.

    A process counts with its children (PostgreSQL serves each connection in
    one), read from the OS at the start and end of the window.
    """

    def __init__(self, pids: dict[str, int], alone: tuple[str, ...] = ()) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}
        self.alone = set(alone)  # measured without their children
        self.start_cpu: dict[str, dict[int, float]] = {}
        self.peak_rss: dict[str, int] = dict.fromkeys(self.procs, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.started = 0.0
        self.elapsed = 0.0

    def _tree(self, proc: psutil.Process) -> list[psutil.Process]:
        if any(self.procs.get(name) is proc for name in self.alone):
            return [proc]
        try:
            return [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return [proc]

    def _cpu(self, proc: psutil.Process) -> dict[int, float]:
        out: dict[int, float] = {}
        for p in self._tree(proc):
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            out[p.pid] = float(t.user + t.system)
        return out

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            for name, proc in self.procs.items():
                rss = 0
                for p in self._tree(proc):
                    with contextlib.suppress(psutil.Error):
                        rss += p.memory_info().rss
                self.peak_rss[name] = max(self.peak_rss[name], rss)

    def __enter__(self) -> ProcessMeter:
        self.start_cpu = {n: self._cpu(p) for n, p in self.procs.items()}
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.elapsed = time.perf_counter() - self.started
        self._stop.set()
        self._thread.join()
        self.cpu = {}
        for name, proc in self.procs.items():
            start = self.start_cpu[name]
            end = self._cpu(proc)
            self.cpu[name] = sum(t - start.get(pid, 0.0) for pid, t in end.items())

    def report(self, units: int, unit: str) -> dict[str, Any]:
        per = 1000.0 / units if units else 0.0
        return {
            name: {
                "cpu_seconds": round(self.cpu[name], 3),
                f"cpu_ms_per_{unit}": round(self.cpu[name] * per, 4),
                "cpu_share": round(self.cpu[name] / self.elapsed, 3) if self.elapsed else 0.0,
                "peak_rss_mb": round(self.peak_rss[name] / 2**20, 1),
            }
            for name in self.procs
        }
