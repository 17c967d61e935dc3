"""How operator commands reach a platform: NATS (and the database) from stack.json or flags.

On NATS the command line is the operator: ``confab up`` keeps the ``admin`` user's
credentials in the ``nats_url`` of ``<data-dir>/stack.json`` (readable only by its owner).
For another platform, give them in ``--nats-url`` (``nats://admin:PASSWORD@host:4222``) or
in ``CONFAB_NATS_USER`` and ``CONFAB_NATS_PASSWORD``; credentials in the URL win.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from confab import bus
from confab.db import create_engine
from confab.errors import ConfabError
from confab.logging import configure
from confab.personal import KeyRing
from confab.rebuild import REBUILD_POOL
from confab.rpc import RpcClient
from confab.streamread import speed_up

T = TypeVar("T")


def add_target_options(parser: argparse.ArgumentParser, *, database: bool = False) -> None:
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
        help="the platform's NATS, nats://user:password@host:port (default: from stack.json)",
    )
    if database:
        parser.add_argument(
            "--database-url",
            default=env("CONFAB_DATABASE_URL"),
            help="the platform's PostgreSQL (default: from stack.json)",
        )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _from_stack(args: argparse.Namespace, key: str, flag: str) -> str:
    stack = Path(args.data_dir) / "stack.json"
    try:
        return str(json.loads(stack.read_text())[key])
    except FileNotFoundError:
        raise SystemExit(
            f"confab: no {stack}; start the platform with 'confab up' or pass {flag}"
        ) from None
    except (KeyError, ValueError):
        raise SystemExit(f"confab: {stack} has no {key}; pass {flag}") from None


def nats_url(args: argparse.Namespace) -> str:
    if args.nats_url:
        return str(args.nats_url)
    return _from_stack(args, "nats_url", "--nats-url")


async def connect(args: argparse.Namespace) -> NATS:
    """NATS as the operator: credentials from the URL, else from the environment."""
    url = nats_url(args)
    env = os.environ.get
    user, password = "", ""
    if not bus.split_credentials(url)[1]:
        user, password = env("CONFAB_NATS_USER", ""), env("CONFAB_NATS_PASSWORD", "")
    return await bus.connect(
        url,
        "confab-cli",
        user=user,
        password=password,
        tls_ca_file=env("CONFAB_NATS_TLS_CA_FILE", ""),
    )


def database_url(args: argparse.Namespace) -> str:
    if getattr(args, "database_url", None):
        return str(args.database_url)
    return _from_stack(args, "database_url", "--database-url")


@dataclass
class Platform:
    """What a command talks to: NATS (JetStream) and, if it asked, the database."""

    nc: NATS
    js: JetStreamContext
    database_url: str | None = None
    _engine: AsyncEngine | None = None
    _keys: KeyRing | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            if self.database_url is None:
                raise AssertionError("this command did not ask for the database")
            # A rebuild holds a connection for each projection (or lane) it replays at
            # once, besides its lock's and the swap's: kept, not opened per batch.
            self._engine = create_engine(self.database_url, pool_size=REBUILD_POOL)
        return self._engine

    async def key_ring(self) -> KeyRing:
        """Users' data keys, to replay sealed personal fields as the services see them."""
        if self._keys is None:
            self._keys = await KeyRing(self.nc, self.js).open()
        return self._keys

    async def close(self) -> None:
        if self._keys is not None:
            await self._keys.close()
        if self._engine is not None:
            await self._engine.dispose()
        if not self.nc.is_closed:
            await self.nc.close()


def run_on_platform(
    args: argparse.Namespace,
    work: Callable[[Platform], Awaitable[T]],
    *,
    database: bool = False,
    interrupted: str = "interrupted",
) -> T:
    """Connect, run ``work``, close; a platform error becomes one line and exit code 1,
    Ctrl-C the line ``interrupted`` and exit code 130."""
    import asyncio

    url = database_url(args) if database else None
    nats_url(args)  # a missing stack.json is reported before anything starts
    # Warnings and errors on stderr, readable; stdout is the command's output.
    configure("confab-cli", os.environ.get("CONFAB_LOG_LEVEL", "warning"), "console")

    async def main() -> T:
        nc = await connect(args)
        speed_up(nc)
        platform = Platform(nc, nc.jetstream(), url)
        try:
            return await work(platform)
        finally:
            await platform.close()

    try:
        return asyncio.run(main())
    except ConfabError as exc:
        raise SystemExit(f"confab: {exc.message}") from None
    except BrokenPipeError:  # the reader went away (e.g. "| head"): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    except (OSError, sa.exc.DBAPIError) as exc:
        raise SystemExit(f"confab: {_one_line(exc)}") from None
    except KeyboardInterrupt:
        print(f"\nconfab: {interrupted}", file=sys.stderr)
        raise SystemExit(130) from None


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    return text.strip().splitlines()[0]


def run_with_rpc(args: argparse.Namespace, work: Callable[[RpcClient], Awaitable[T]]) -> T:
    """Connect, run ``work``, close; a platform error becomes one line and exit code 1."""
    import asyncio

    async def main() -> T:
        nc = await connect(args)
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


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
