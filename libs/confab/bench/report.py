"""``confab bench report``: PNG plots drawn from ``bench/results/*.json``.

- ``latency_over_load.png``: p50 and p99 latency at each offered rate of the
  open-loop runs (``sends-open``, ``e2e``; run them with ``--rates``);
- ``throughput_per_core.png``: units of work per CPU second of the platform's
  processes (the load generator left out), per run;
- ``memory_per_connection.png``: the fanout's RSS growth per connection.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from confab.bench.measure import outside_platform
from confab.bench.result import plural

OPEN_LOOP = {"sends-open": "send → persisted (201)", "e2e": "send → read on a socket"}


def load(out: Path) -> dict[str, dict[str, Any]]:
    results = {}
    for path in sorted(out.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(data, dict) and "runs" in data and "scenario" in data:
            results[data["scenario"]] = data
    return results


def latency_points(
    results: dict[str, dict[str, Any]],
) -> dict[str, list[tuple[float, float, float]]]:
    """(offered rate, p50, p99) per open-loop scenario, by rate."""
    points = {}
    for name in OPEN_LOOP:
        runs = results.get(name, {}).get("runs", [])
        xs = [
            (r["offered_per_s"], r["latency"]["p50_ms"], r["latency"]["p99_ms"])
            for r in runs
            if r.get("offered_per_s") and r["latency"]["p99_ms"] is not None
        ]
        if xs:
            points[name] = sorted(xs)
    return points


def per_core(results: dict[str, dict[str, Any]]) -> list[tuple[str, float, str]]:
    """(label, units per CPU second of the platform's processes, unit) per run."""
    bars = []
    for name, result in results.items():
        if name == "coldstart":
            continue
        for r in result["runs"]:
            if "processes" not in r:  # written by an older harness
                continue
            cpu = sum(
                p["cpu_seconds"] for n, p in r["processes"].items() if not outside_platform(n)
            )
            if cpu > 0 and r["work"]:
                bars.append((f"{name} {r['run']}", r["work"] / cpu, r["unit"]))
    return bars


def per_connection(results: dict[str, dict[str, Any]]) -> list[tuple[str, float]]:
    bars = []
    for r in results.get("idle", {}).get("runs", []):
        if r.get("kb_per_connection") is not None:
            bars.append((f"idle: {r['connected_at_end']:,} connections", r["kb_per_connection"]))
    idle = results.get("fanout", {}).get("idle")
    if idle and idle.get("kb_per_idle_connection") is not None:
        label = f"fanout: {idle['sockets']:,} subscribed sockets"
        bars.append((label, idle["kb_per_idle_connection"]))
    return bars


def run(out: Path) -> int:
    try:
        import matplotlib
    except ImportError:  # a development dependency (confab[bench]): no service image has it
        print(
            "confab bench report: matplotlib is not installed; `make install` installs it "
            "(or pip install 'confab[bench]')",
            file=sys.stderr,
        )
        return 1
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = load(out)
    if not results:
        print(f"confab bench report: no results in {out}; run confab bench first", file=sys.stderr)
        return 1
    cpus = next(iter(results.values())).get("machine", {}).get("cpus")
    drawn = []

    points = latency_points(results)
    if points:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for n, (name, xs) in enumerate(points.items()):
            rates, color = [x[0] for x in xs], f"C{n}"
            label = f"{name} p50 ({OPEN_LOOP[name]})"
            ax.plot(rates, [x[1] for x in xs], marker="o", color=color, label=label)
            ax.plot(
                rates, [x[2] for x in xs], marker="s", ls="--", color=color, label=f"{name} p99"
            )
        ax.axhline(25, color="grey", lw=0.8, ls=":", label="target: e2e p99 ≤ 25 ms at 1,000/s")
        ax.set_xlabel("offered load (messages/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"Latency over load ({cpus} cores, whole stack local)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        drawn.append(_save(fig, out / "latency_over_load.png"))

    bars = per_core(results)
    if bars:
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(bars) + 1.5))
        labels = [f"{label} ({plural(unit)})" for label, _, unit in bars]
        ax.barh(labels, [v for _, v, _ in bars], color="tab:blue")
        for i, (_, v, _) in enumerate(bars):
            ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("units of work per CPU second of the platform's processes (log)")
        ax.set_title("Throughput per core")
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
        drawn.append(_save(fig, out / "throughput_per_core.png"))

    memory = per_connection(results)
    if memory:
        fig, ax = plt.subplots(figsize=(7, 0.6 * len(memory) + 1.5))
        ax.barh([m[0] for m in memory], [m[1] for m in memory], color="tab:green")
        for i, (_, v) in enumerate(memory):
            ax.text(v, i, f" {v:.1f} KB", va="center", fontsize=9)
        ax.set_xlabel("fanout RSS growth per connection (KB)")
        ax.set_title("Memory per connection (one fanout process)")
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
        drawn.append(_save(fig, out / "memory_per_connection.png"))

    rows = [r for r in results.get("peers", {}).get("ratios", []) if r["ratio"] is not None]
    if rows:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
        ax.barh([r["figure"] for r in rows], [r["ratio"] for r in rows], color="tab:purple")
        for i, r in enumerate(rows):
            ax.text(r["ratio"], i, f" {r['ratio']:.2f}", va="center", fontsize=8)
        ax.axvline(1.0, color="grey", lw=0.8, ls=":", label="as Soketi")
        ax.set_xlabel("Confab ÷ Soketi (below 1: Confab needs less, or delivers less per s)")
        ax.set_title("Confab's fanout beside Soketi 1.6.1, same load, same machine")
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
        drawn.append(_save(fig, out / "peers.png"))

    for path in drawn:
        print(f"wrote {path}")
    missing = {
        "latency_over_load.png": "sends-open or e2e runs with --rates",
        "throughput_per_core.png": "any scenario",
        "memory_per_connection.png": "idle or fanout",
        "peers.png": "peers (make bench-peers)",
    }
    for name, needs in missing.items():
        if out / name not in drawn:
            print(f"not drawn: {name} (needs results of {needs})")
    return 0


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
