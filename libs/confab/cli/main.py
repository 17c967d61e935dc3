"""``confab``: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from confab.bench import main as bench
from confab.cli import events, projections, streams, up, webhooks, workspace


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="confab", description="Run and operate a Confab chat platform."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up.add_parser(commands)
    workspace.add_parser(commands)
    streams.add_parser(commands)
    events.add_parser(commands)
    projections.add_parser(commands)
    webhooks.add_parser(commands)
    bench.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    code = args.run(args)
    raise SystemExit(code or 0)


if __name__ == "__main__":
    main()
