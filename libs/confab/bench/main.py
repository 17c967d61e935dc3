"""``confab bench``: run scenarios, print a table, write ``bench/results/<scenario>.json``;
``confab bench report`` draws the plots from those files.

Scenarios that need their own backends (``replay``, ``catchup``) or their own ``confab up``
(``coldstart``) run first; the others share one stack, started here or given
by ``--target``. Any run that lost or duplicated an item says so on stderr and
makes the command exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confab.bench import (
    catchup,
    coldstart,
    e2e,
    fanout,
    floor,
    idle,
    notifications,
    peers,
    replay,
    search,
    sends,
    uploads,
    webhooks,
)
from confab.bench.result import loud_loss, print_result, print_summary, scenario_result, write
from confab.bench.stack import local_stack
from confab.rlimits import raise_open_files

ON_STACK = (
    "sends-closed",
    "sends-open",
    "e2e",
    "fanout",
    "idle",
    "uploads",
    "webhooks",
    "notifications",
    "search",
    "floor",
)
ALONE = ("replay", "catchup", "coldstart")
SCENARIOS = (*ALONE, *ON_STACK)
# Not part of "all": Soketi from npm beside a stack of its own (``make bench-peers``).
PEERS = "peers"


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "bench",
        help="run benchmarks against a local stack, or draw their plots (bench report)",
        description="Scenarios: " + ", ".join(SCENARIOS) + "; 'all' runs every one; "
        "'peers' runs fanout and idle against Soketi and Confab (make bench-peers); "
        "'report' draws PNG plots from the result files. 'floor' runs the send path's bare "
        "skeleton (HTTP, a NATS request, an append, the stream's readers) on the stack's NATS.",
    )
    p.add_argument(
        "scenarios",
        nargs="*",
        default=["all"],
        help=f"which to run: {', '.join(SCENARIOS)}, all (default), {PEERS}, or report",
    )
    p.add_argument(
        "--peers-dir",
        type=Path,
        default=Path("bench/peers"),
        help="peers: where `make bench-peers` installed Soketi (default: bench/peers)",
    )
    p.add_argument(
        "--target",
        type=Path,
        help="the stack.json of a running stack (default: start one with confab up)",
    )
    p.add_argument("--seconds", type=float, default=20.0, help="measured duration of each run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    p.add_argument("--rate", type=float, default=1000.0, help="open loop: messages per second")
    p.add_argument(
        "--rates",
        help="open loop (sends-open, e2e): comma-separated rates, one run each "
        "(latency over load; default: --rate)",
    )
    p.add_argument("--workers", type=int, default=64, help="closed loop: concurrent senders")
    p.add_argument(
        "--generators",
        type=int,
        default=1,
        help="sends-closed, sends-open: load generator processes sharing the senders (or "
        "the rate), each measured on its own line",
    )
    p.add_argument("--rooms", type=int, default=50, help="conversations to spread load over")
    p.add_argument(
        "--pairs",
        type=int,
        default=2,
        help="webhooks: pairs of runs without and with endpoints, in ABBA order",
    )
    p.add_argument(
        "--recipients", type=int, default=10_000, help="notifications: offline recipients"
    )
    p.add_argument(
        "--participants", type=int, default=3, help="e2e: users per conversation (1 sends)"
    )
    p.add_argument(
        "--events",
        type=int,
        help="replay, catchup: conversation events in the log "
        f"(default: replay 1,000,000, catchup {catchup.DEFAULT_EVENTS:,})",
    )
    p.add_argument("--connections", type=int, default=20_000, help="idle: connections to hold open")
    p.add_argument("--starts", type=int, default=3, help="coldstart: how many cold starts")
    p.add_argument("--messages", type=int, default=1_000_000, help="search: messages in the index")
    p.add_argument("--queries", type=int, default=200, help="search: searches of each kind")
    p.add_argument(
        "--automod-rules",
        type=int,
        default=0,
        help="sends: automatic-moderation rules in force in the sending workspace "
        "(word lists, RE2 patterns and the detectors; none matches the benchmark's text)",
    )
    p.add_argument(
        "--readers",
        type=int,
        default=floor.READERS,
        help=f"floor: durable readers of the skeleton's stream (default {floor.READERS}: as "
        "many as a confab up stack has on CONVERSATIONS)",
    )
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    fanout.add_arguments(p)
    p.set_defaults(run=run)


def _rates(args: argparse.Namespace) -> list[float]:
    if not args.rates:
        return [args.rate]
    return [float(x) for x in str(args.rates).split(",") if x.strip()]


def _on_stack(name: str, info: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if name == "fanout":
        return asyncio.run(fanout.run(info, args))
    if name == "idle":
        return asyncio.run(idle.run(info, args))
    if name == "webhooks":
        runs = asyncio.run(webhooks.run(info, args))
        return scenario_result("webhooks", runs, webhooks.targets(runs))
    if name == "notifications":
        runs = asyncio.run(notifications.run(info, args))
        return scenario_result("notifications", runs, notifications.targets(runs))
    if name == "uploads":
        return scenario_result("uploads", asyncio.run(uploads.run(info, seconds=args.seconds)), [])
    if name == "search":
        runs = asyncio.run(search.run(info, args.messages, args.queries))
        return scenario_result("search", runs, [])
    if name == "floor":
        run = floor.run(info, args.seconds, args.workers, args.rooms, args.warmup, args.readers)
        record = asyncio.run(run)
        return scenario_result("floor", [record], floor.targets([record]))
    if name == "e2e":
        runs = asyncio.run(e2e.run(info, args, _rates(args)))
        return scenario_result("e2e", runs, e2e.targets(runs))
    mode = name.split("-", 1)[1]
    runs = asyncio.run(
        sends.run(
            info,
            mode,
            seconds=args.seconds,
            rates=_rates(args),
            workers=args.workers,
            rooms=args.rooms,
            warmup=args.warmup,
            automod_rules=args.automod_rules,
            generators=args.generators,
        )
    )
    return scenario_result(name, runs, sends.targets(name, runs))


def run(args: argparse.Namespace) -> int:
    if args.scenarios == ["report"]:
        from confab.bench import report

        return report.run(args.out)
    chosen = SCENARIOS if args.scenarios == ["all"] else tuple(args.scenarios)
    unknown = [s for s in chosen if s not in (*SCENARIOS, PEERS)]
    if unknown:
        print(
            f"confab bench: unknown scenario {unknown[0]}; choose from "
            f"{', '.join(SCENARIOS)}, all, {PEERS} or report",
            file=sys.stderr,
        )
        return 2
    if PEERS in chosen:
        try:
            peers.soketi_server(args.peers_dir)
        except peers.PeerMissing as missing:
            print(f"confab bench: {missing}", file=sys.stderr)
            return 2
    # Every socket is a file on both sides; the stack started here inherits the limit.
    raise_open_files(max(args.connections, args.sockets) + 4096)
    results: list[dict[str, Any]] = []

    def record(result: dict[str, Any]) -> None:
        path = write(result, args.out)
        print_result(result)
        print(f"  → {path}")
        results.append(result)

    alone: dict[str, Callable[[], dict[str, Any]]] = {
        "replay": lambda: replay.run(args.events or 1_000_000),
        "catchup": lambda: catchup.run(args.events or catchup.DEFAULT_EVENTS),
        "coldstart": lambda: coldstart.run(args.starts),
    }
    for name in chosen:
        if name in alone:  # their own backends: nothing else uses the cores meanwhile
            record(alone[name]())
    if PEERS in chosen:  # Soketi, then a Confab stack of its own
        record(peers.run(args))
    stacked = [name for name in chosen if name in ON_STACK]
    if stacked:
        with local_stack(args.target) as info:
            for name in stacked:
                record(_on_stack(name, info, args))
    print_summary(results)
    failed = [r for r in results if loud_loss(r)]
    return 1 if failed else 0
