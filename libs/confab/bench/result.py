"""One result format for every scenario: a run record, the scenario's file, the table.

A scenario writes ``bench/results/<scenario>.json``: what ran (command,
machine, time), its ``runs`` (one per load point), totals of loss, and how it
compares with its targets. Every run has the same fields::

    run, load, unit, work, seconds, throughput_per_s,
    latency {count, p50_ms, p90_ms, p99_ms, max_ms},
    processes {name: {cpu_seconds, cpu_us_per_unit, cpu_share, peak_rss_mb}},
    errors {kind: count}, sent, received, lost, duplicates,
    generator {cpu_seconds, cpu_share, loop_lag_p99_ms, loop_lag_max_ms, gc_longest_ms,
    saturated}, generator_saturated

``sent`` counts the items the run expected to arrive (messages, deliveries,
events, uploads, connections), ``received`` those counted on arrival; an item
missing is ``lost``, one counted twice a ``duplicate``.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from confab.bench.measure import Latencies, LoopLag, ProcessMeter, generator_report

RUN_FIELDS = (
    "run",
    "load",
    "unit",
    "work",
    "seconds",
    "throughput_per_s",
    "latency",
    "processes",
    "errors",
    "sent",
    "received",
    "lost",
    "duplicates",
    "generator",
    "generator_saturated",
)
SCENARIO_FIELDS = (
    "scenario",
    "command",
    "machine",
    "finished_at",
    "runs",
    "lost",
    "duplicates",
    "errors",
    "generator_saturated",
    "targets",
)


@dataclass
class Tally:
    """Items expected and items counted on arrival, by key: what is missing or came twice."""

    expected: int = 0
    seen: set[Hashable] = field(default_factory=set)
    received: int = 0
    duplicates: int = 0

    def expect(self, n: int = 1) -> None:
        self.expected += n

    def arrive(self, key: Hashable) -> bool:
        """Count one arrival; False when ``key`` had arrived before."""
        self.received += 1
        if key in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(key)
        return True

    @property
    def unique(self) -> int:
        return len(self.seen)

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.unique)

    def counts(self) -> dict[str, int]:
        return {
            "sent": self.expected,
            "received": self.received,
            "lost": self.lost,
            "duplicates": self.duplicates,
        }


def counted(expected: dict[Any, int], arrived: dict[Any, int]) -> dict[str, int]:
    """Loss accounting from counts per key (e.g. messages per conversation)."""
    lost = sum(max(0, n - arrived.get(k, 0)) for k, n in expected.items())
    extra = sum(max(0, n - expected.get(k, 0)) for k, n in arrived.items())
    return {
        "sent": sum(expected.values()),
        "received": sum(arrived.values()),
        "lost": lost,
        "duplicates": extra,
    }


def add_error(errors: dict[str, int], kind: str) -> None:
    errors[kind] = errors.get(kind, 0) + 1


def run_record(
    name: str,
    load: str,
    *,
    unit: str,
    work: int,
    latencies: Latencies,
    meter: ProcessMeter,
    lag: LoopLag | None,
    loss: dict[str, int],
    errors: dict[str, int],
    seconds: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The uniform record of one run (``extra`` adds the scenario's own figures)."""
    elapsed = meter.elapsed if seconds is None else seconds
    generator = generator_report(meter, lag)
    return {
        "run": name,
        "load": load,
        "unit": unit,
        "work": work,
        "seconds": round(elapsed, 3),
        "throughput_per_s": round(work / elapsed, 1) if elapsed else 0.0,
        "latency": latencies.summary(),
        "processes": meter.report(work),
        "errors": dict(errors),
        **loss,
        "generator": generator,
        "generator_saturated": generator["saturated"],
        **extra,
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": psutil.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def scenario_result(
    scenario: str,
    runs: list[dict[str, Any]],
    targets: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """A scenario's file: its runs, totals of loss and errors, and its targets."""
    errors: dict[str, int] = {}
    for r in runs:
        for kind, n in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    return {
        "scenario": scenario,
        "command": "confab " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": runs,
        "lost": sum(r["lost"] for r in runs),
        "duplicates": sum(r["duplicates"] for r in runs),
        "errors": errors,
        "generator_saturated": any(r["generator_saturated"] for r in runs),
        "targets": targets,
        **extra,
    }


def target(what: str, goal: str, measured: float | None, met: bool | None) -> dict[str, Any]:
    """One of the issue's speed targets next to what this run measured."""
    return {"what": what, "target": goal, "measured": measured, "met": met}


def write(result: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{result['scenario']}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return path


def loud_loss(result: dict[str, Any]) -> bool:
    """Say on stderr, unmissably, that a run lost or duplicated items; True if it did."""
    bad = False
    for r in result["runs"]:
        if r["lost"] or r["duplicates"]:
            bad = True
            print(
                f"!!! {result['scenario']} {r['run']}: {r['lost']} LOST and "
                f"{r['duplicates']} DUPLICATED of {r['sent']} {plural(r['unit'])} sent !!!",
                file=sys.stderr,
            )
    return bad


def plural(unit: str) -> str:
    return unit[:-1] + "ies" if unit.endswith("y") else unit + "s"


def print_result(result: dict[str, Any]) -> None:
    """A scenario's runs with each process's CPU and memory."""
    print(f"\n== {result['scenario']}")
    for line in result.get("highlights", []):
        print(f"  {line}")
    for r in result["runs"]:
        lat = r["latency"]
        gen = r["generator"]
        print(f"  {r['run']}: {r['load']}")
        print(
            f"    throughput {r['throughput_per_s']:>10,.1f} {plural(r['unit'])}/s   "
            f"latency ms p50 {lat['p50_ms']}  p90 {lat['p90_ms']}  p99 {lat['p99_ms']}  "
            f"max {lat['max_ms']}"
        )
        print(
            f"    sent {r['sent']}  received {r['received']}  lost {r['lost']}  "
            f"duplicates {r['duplicates']}  errors {sum(r['errors'].values())}"
            + (f" {r['errors']}" if r["errors"] else "")
        )
        print(
            f"    generator CPU share {gen['cpu_share']}, loop lag p99 {gen['loop_lag_p99_ms']} ms"
            f" (max {gen.get('loop_lag_max_ms')} ms; longest GC {gen.get('gc_longest_ms')} ms)"
            + ("   GENERATOR SATURATED: figures are partly its own" if gen["saturated"] else "")
        )
        server_lag = r.get("fanout_loop_lag_ms")
        if server_lag:
            print(
                f"    fanout loop lag ms (bucket edges) p50 {server_lag['p50_ms']}  "
                f"p90 {server_lag['p90_ms']}  p99 {server_lag['p99_ms']}  "
                f"max {server_lag.get('p100_ms')}  ({server_lag['samples']:.0f} samples)"
            )
        bare = r.get("bare_append")
        if bare:
            print(
                f"    stack CPU {r['stack_cpu_us_per_message']} µs/message = "
                f"{r['stack_over_bare_append']} × a bare JetStream append from Python "
                f"({bare['cpu_us']} µs: appender {bare['client_cpu_us']} + NATS "
                f"{bare['nats_cpu_us']}; {bare['appends_per_s']:,.0f} appends/s from "
                f"{bare['concurrency']} appenders)"
            )
        tcp = r.get("tcp")
        if tcp and any(tcp.values()):
            moved = ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in tcp.items() if n)
            print(f"    TCP on this machine during the run: {moved}")
        per_unit = f"CPU µs/{r['unit']}"
        print(f"    {'process':<16}{'CPU s':>8}{per_unit:>18}{'cores':>7}{'peak RSS MB':>13}")
        for name, p in r["processes"].items():
            per = p["cpu_us_per_unit"]
            print(
                f"    {name:<16}{p['cpu_seconds']:>8.2f}{per if per is not None else '-':>18}"
                f"{p['cpu_share']:>7.2f}{p['peak_rss_mb']:>13.1f}"
            )


def print_summary(results: list[dict[str, Any]]) -> None:
    """One line per run, then each target met or not."""
    if not results:
        return
    print(
        f"\n{'scenario / run':<28}{'throughput/s':>14}{'unit':>12}{'p50 ms':>9}{'p90 ms':>9}"
        f"{'p99 ms':>9}{'max ms':>9}{'lost':>6}{'dup':>5}{'err':>5}  gen"
    )
    for res in results:
        for r in res["runs"]:
            lat = {k: "-" if v is None else v for k, v in r["latency"].items()}
            gen = "SATURATED" if r["generator_saturated"] else "ok"
            print(
                f"{(res['scenario'] + ' ' + r['run'])[:27]:<28}{r['throughput_per_s']:>14,.1f}"
                f"{r['unit']:>12}{lat['p50_ms']:>9}{lat['p90_ms']:>9}{lat['p99_ms']:>9}"
                f"{lat['max_ms']:>9}{r['lost']:>6}{r['duplicates']:>5}"
                f"{sum(r['errors'].values()):>5}  {gen}"
            )
    print()
    for res in results:
        for t in res["targets"]:
            verdict = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
            pairs = t.get("by_pair")
            spread = ""
            if pairs:
                shown = ", ".join(map(str, pairs))
                spread = f" (pair by pair: {shown}; their median {t['pairs_median']})"
            print(f"target {t['what']}: {t['target']}, measured {t['measured']}{spread}: {verdict}")
