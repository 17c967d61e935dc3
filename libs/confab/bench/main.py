"""``confab bench``: run scenarios, print a table, write ``bench/results/<scenario>.json``."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
from pathlib import Path
from typing import Any

import psutil

from confab.bench import fanout, replay, sends, uploads
from confab.bench.stack import local_stack

SCENARIOS = ("sends-closed", "sends-open", "replay", "uploads", "fanout")


def add_parser(commands: Any) -> None:
    p = commands.add_parser("bench", help="run benchmarks against a local stack")
    p.add_argument(
        "scenarios",
        nargs="*",
        default=["all"],
        help=f"which to run: {', '.join(SCENARIOS)} or all (default)",
    )
    p.add_argument(
        "--target",
        type=Path,
        help="the stack.json of a running stack (default: start one with confab up)",
    )
    p.add_argument("--seconds", type=float, default=20.0, help="measured duration of each run")
    p.add_argument("--rate", type=float, default=500.0, help="open loop: messages per second")
    p.add_argument("--workers", type=int, default=64, help="closed loop: concurrent senders")
    p.add_argument("--rooms", type=int, default=50, help="conversations to spread load over")
    p.add_argument(
        "--events", type=int, default=1_000_000, help="replay: conversation events in the log"
    )
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    fanout.add_arguments(p)
    p.set_defaults(run=run)


def machine() -> dict[str, Any]:
    return {
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run(args: argparse.Namespace) -> int:
    chosen = SCENARIOS if args.scenarios == ["all"] else tuple(args.scenarios)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        print(
            f"confab bench: unknown scenario {unknown[0]}; choose from {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    if "replay" in chosen:  # its own backends, no services: nothing else uses the cores
        result = replay.run(args.events)
        result["machine"] = machine()
        (args.out / "replay.json").write_text(json.dumps(result, indent=2))
        replay.print_result(result)
        chosen = tuple(c for c in chosen if c != "replay")
    if not chosen:
        return 0
    with local_stack(args.target) as info:
        for name in chosen:
            if name == "fanout":
                result = asyncio.run(fanout.run(info, args))
                result["machine"] = machine()
                result["command"] = "confab bench " + " ".join(sys.argv[2:])
                (args.out / "fanout.json").write_text(json.dumps(result, indent=2))
                fanout.print_result(result)
                continue
            if name == "uploads":
                result = asyncio.run(uploads.run(info, seconds=args.seconds))
                result["machine"] = machine()
                (args.out / "uploads.json").write_text(json.dumps(result, indent=2))
                uploads.print_result(result)
                continue
            mode = name.split("-", 1)[1]
            result = asyncio.run(
                sends.run(
                    info,
                    mode,
                    seconds=args.seconds,
                    rate=args.rate,
                    workers=args.workers,
                    rooms=args.rooms,
                )
            )
            result["machine"] = machine()
            result["command"] = "confab bench " + " ".join(sys.argv[2:])
            (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
            print_result(result)
            if result["lost"] or result["duplicates"]:
                failed = True
                print(
                    f"!!! {name}: {result['lost']} LOST and {result['duplicates']} DUPLICATED "
                    "messages",
                    file=sys.stderr,
                )
    return 1 if failed else 0


def print_result(r: dict[str, Any]) -> None:
    lat = r["latency"]
    print(f"\n{r['scenario']}: {r['load']}")
    print(
        f"  throughput {r['throughput_per_s']:>9.1f} /s   persisted {r['persisted']}   "
        f"errors {sum(r['errors'].values())}   lost {r['lost']}   duplicates {r['duplicates']}"
    )
    print(
        f"  latency ms p50 {lat['p50_ms']}  p90 {lat['p90_ms']}  p99 {lat['p99_ms']}  "
        f"max {lat['max_ms']}"
    )
    print(f"  {'process':<16}{'CPU s':>8}{'CPU ms/msg':>12}{'cores':>7}{'peak RSS MB':>13}")
    for name, p in r["processes"].items():
        print(
            f"  {name:<16}{p['cpu_seconds']:>8.2f}{p['cpu_ms_per_message']:>12.4f}"
            f"{p['cpu_share']:>7.2f}{p['peak_rss_mb']:>13.1f}"
        )
