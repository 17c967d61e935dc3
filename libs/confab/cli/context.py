"""How operator commands reach a platform: NATS (and the database) from stack.json or flags."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client as NATS

from confab import bus
from confab.errors import ConfabError
from confab.rpc import RpcClient

T = TypeVar("T")


def add_target_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env("CONFAB_DATA_DIR", ".confab")),
        help="where stack.json is (default .confab)",
    )
    parser.add_argument(
        "--nats-url",
        default=env("CONFAB_NATS_URL"),
        help="the platform's NATS (default: from stack.json)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def nats_url(args: argparse.Namespace) -> str:
    if args.nats_url:
        return str(args.nats_url)
    stack = Path(args.data_dir) / "stack.json"
    try:
        return str(json.loads(stack.read_text())["nats_url"])
    except FileNotFoundError:
        raise SystemExit(
            f"confab: no {stack}; start the platform with 'confab up' or pass --nats-url"
        ) from None


def run_with_rpc(args: argparse.Namespace, work: Callable[[RpcClient], Awaitable[T]]) -> T:
    """Connect, run ``work``, close; a platform error becomes one line and exit code 1."""
    import asyncio

    async def main() -> T:
        nc: NATS = await bus.connect(nats_url(args), "confab-cli")
        try:
            return await work(RpcClient(nc, timeout=10))
        finally:
            await nc.close()

    try:
        return asyncio.run(main())
    except ConfabError as exc:
        raise SystemExit(f"confab: {exc.message}") from None


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    print()
