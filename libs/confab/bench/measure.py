"""What a run records: latencies, each process's CPU seconds and peak memory from the OS,
and whether the load generator itself was the bottleneck."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from confab import looplag


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

    def summary(self) -> dict[str, float | None]:
        v = sorted(self.values)
        ms = 1000.0
        if not v:
            return {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
        return {
            "count": len(v),
            "p50_ms": round(percentile(v, 0.50) * ms, 3),
            "p90_ms": round(percentile(v, 0.90) * ms, 3),
            "p99_ms": round(percentile(v, 0.99) * ms, 3),
            "max_ms": round((v[-1] if v else 0.0) * ms, 3),
        }


class ProcessMeter:
    """CPU seconds used during a window, and peak RSS sampled every 250 ms, per named process.

    A process counts with its children (PostgreSQL serves each connection in
    one), read from the OS at the start and end of the window.
    """

    def __init__(self, pids: dict[str, int], alone: tuple[str, ...] = ()) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}
        # Measured without their children. The load generator always is: when the bench
        # started the stack, the stack's processes are its children.
        self.alone = {*alone, GENERATOR}
        self.start_cpu: dict[str, dict[int, float]] = {}
        self.peak_rss: dict[str, int] = dict.fromkeys(self.procs, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.started = 0.0
        self.elapsed = 0.0
        self.cpu: dict[str, float] = {}
        self.reported: list[str] = []  # add_reported

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

    def _trees(self) -> dict[str, list[psutil.Process]]:
        """Every named process with its descendants (unless alone), from one scan of the
        process table. ``_tree`` per process would scan it once for each: with a dozen
        processes ten times a second, that cost the bench process a fifth of a core,
        taken from the stack it measures and from its own senders (they share the GIL)."""
        children: dict[int, list[psutil.Process]] = {}
        for p in psutil.process_iter(["ppid"]):
            children.setdefault(p.info["ppid"], []).append(p)
        trees = {}
        for name, proc in self.procs.items():
            tree = [proc]
            if name not in self.alone:
                for p in tree:  # grows as it goes: breadth first
                    tree.extend(children.get(p.pid, ()))
            trees[name] = tree
        return trees

    def _sample(self) -> None:
        trees = self._trees()
        rounds = 0
        while not self._stop.wait(0.25):
            rounds += 1
            if rounds % 4 == 0:  # who the children are changes slowly: once a second
                trees = self._trees()
            for name, tree in trees.items():
                rss = 0
                for p in tree:
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
        for name, proc in self.procs.items():
            start = self.start_cpu[name]
            end = self._cpu(proc)
            self.cpu[name] = sum(t - start.get(pid, 0.0) for pid, t in end.items())

    def lifetime(self) -> dict[str, dict[str, float]]:
        """Each process's CPU seconds and peak RSS since it started (with its children,
        unless alone): what starting it cost, read at once without a window."""
        out = {}
        for name, proc in self.procs.items():
            tree = self._tree(proc)
            out[name] = {
                "cpu_seconds": sum(self._cpu(proc).values()),
                "peak_rss_mb": sum(peak_rss_mb(p.pid) or 0.0 for p in tree),
            }
        return out

    def add_reported(self, name: str, cpu_seconds: float, peak_rss_mb: float) -> None:
        """A process that measured itself over its whole life inside the window (a
        helper started and gone before the window closed, so never read here)."""
        self.cpu[name] = cpu_seconds
        self.peak_rss[name] = int(peak_rss_mb * 2**20)
        self.reported.append(name)

    def report(self, units: int) -> dict[str, Any]:
        """Per process: CPU seconds in the window, per unit of work (µs), cores used, peak RSS."""
        return {
            name: {
                "cpu_seconds": round(self.cpu[name], 3),
                "cpu_us_per_unit": round(self.cpu[name] * 1e6 / units, 2) if units else None,
                "cpu_share": round(self.cpu[name] / self.elapsed, 3) if self.elapsed else 0.0,
                "peak_rss_mb": round(self.peak_rss[name] / 2**20, 1),
            }
            for name in [*self.procs, *self.reported]
        }


GENERATOR = "load generator"
RECEIVER = "receiver"  # a tenant's webhook receiver: measured, never the platform's
SATURATED_CPU = 0.9  # the generator's share of one core (it is one asyncio thread)
SATURATED_LAG_MS = 25.0  # its event loop's p99 lag (the whole machine's load shows in it too)


class LoopLag:
    """The generator's own event loop over a measured window: how late a 10 ms timer
    fires, and its longest garbage collection (a single stall shows in the maximum, not
    in the 99th percentile of 100 samples a second).

    The window also starts with what the generator has set up (its thousands of sockets,
    say) collected once and frozen (``gc.freeze``), and thawed at the end. Otherwise a
    full collection inside the window walks all of it: 130 to 230 ms with 10,000 sockets
    open, measured, which stalls every delivery in flight and made the fanout's p99 (on
    either server) the generator's.
    """

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.gc_longest = 0.0  # seconds
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> LoopLag:
        gc.collect()
        gc.freeze()
        self._task = asyncio.get_running_loop().create_task(looplag.sample(self.lags.append, 0.01))
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *_: Any) -> None:
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        gc.unfreeze()

    def _on_gc(self, phase: str, _info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        elif self._gc_started:
            self.gc_longest = max(self.gc_longest, now - self._gc_started)

    def p99_ms(self) -> float:
        return round(percentile(sorted(self.lags), 0.99) * 1000, 3)

    def max_ms(self) -> float:
        return round(max(self.lags, default=0.0) * 1000, 3)


def is_generator(name: str) -> bool:
    """A load generator process: this one, or a helper (``load generator 2``, …)."""
    return name == GENERATOR or name.startswith(GENERATOR + " ")


def outside_platform(name: str) -> bool:
    """Measured beside the platform, never counted as its: generators and receivers."""
    return is_generator(name) or name == RECEIVER


def generator_report(meter: ProcessMeter, lag: LoopLag | None) -> dict[str, Any]:
    """The load generator's own CPU and loop lag, and whether it saturated: then the
    figures are partly its own limits, not the system's. With helper processes, the
    busiest process's share counts (each is one asyncio thread), and ``cpu_seconds`` is
    their sum; the loop lags of all of them make one percentile."""
    cpus = [cpu for name, cpu in meter.cpu.items() if is_generator(name)] or [0.0]
    cpu = sum(cpus)
    share = max(cpus) / meter.elapsed if meter.elapsed else 0.0
    lag_ms = lag.p99_ms() if lag is not None else None
    saturated = share > SATURATED_CPU or (lag_ms is not None and lag_ms > SATURATED_LAG_MS)
    return {
        "cpu_seconds": round(cpu, 3),
        "cpu_share": round(share, 3),
        "loop_lag_p99_ms": lag_ms,
        "loop_lag_max_ms": lag.max_ms() if lag is not None else None,
        "gc_longest_ms": round(lag.gc_longest * 1000, 3) if lag is not None else None,
        "saturated": saturated,
    }


def with_generator(pids: dict[str, int]) -> dict[str, int]:
    """The stack's processes and this one, the load generator."""
    return {**pids, GENERATOR: psutil.Process().pid}


def open_files_limit(pid: int) -> int | None:
    """The soft open-files limit of another process (Linux), or None where unreadable."""
    try:
        return int(psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE)[0])
    except (psutil.Error, AttributeError, OSError):
        return None


def peak_rss_mb(pid: int) -> float | None:
    """A process's lifetime peak RSS (Linux VmHWM), else its current RSS."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except psutil.Error:
        return None


# The kernel's TCP counters that explain a delay no event loop shows: a retransmission
# waits at least 200 ms (Linux's minimum RTO), a SYN retried after a full listen backlog 1 s.
TCP_COUNTERS = {
    "Tcp:RetransSegs": "retransmitted_segments",
    "TcpExt:TCPTimeouts": "retransmission_timeouts",
    "TcpExt:TCPLossProbes": "tail_loss_probes",
    "TcpExt:TCPSynRetrans": "syn_retransmits",
    "TcpExt:ListenOverflows": "listen_overflows",
    "TcpExt:TCPRcvQDrop": "receive_queue_drops",
    "TcpExt:TCPBacklogDrop": "backlog_drops",
}


def tcp_counters() -> dict[str, int] | None:
    """The machine's TCP counters of ``TCP_COUNTERS`` (Linux; None elsewhere)."""
    found: dict[str, int] = {}
    try:
        for path in ("/proc/net/snmp", "/proc/net/netstat"):
            with open(path) as f:
                lines = f.read().splitlines()
            for names, values in zip(lines[::2], lines[1::2], strict=False):
                head, *keys = names.split()
                for key, value in zip(keys, values.split()[1:], strict=False):
                    if f"{head}{key}" in TCP_COUNTERS:
                        found[TCP_COUNTERS[f"{head}{key}"]] = int(value)
    except (OSError, ValueError):
        return None
    return found


def tcp_delta(before: dict[str, int] | None) -> dict[str, int] | None:
    """What the counters moved by since ``before`` (the whole machine's: every process)."""
    after = tcp_counters()
    if before is None or after is None:
        return None
    return {name: after[name] - before.get(name, 0) for name in after}
