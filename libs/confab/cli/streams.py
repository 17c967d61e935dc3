"""``confab streams``: every stream and its consumers, with counts, bytes and lag."""

from __future__ import annotations

import argparse
from typing import Any

from confab.cli.context import (
    Platform,
    add_target_options,
    human_bytes,
    print_json,
    print_table,
    run_on_platform,
)


def add_parser(commands: Any) -> None:
    p = commands.add_parser("streams", help="streams and consumers: messages, bytes, lag")
    add_target_options(p)
    p.set_defaults(run=streams_command)


def _time(value: Any) -> str | None:
    return value if isinstance(value, str) else (value.isoformat() if value else None)


async def _collect(platform: Platform) -> list[dict[str, Any]]:
    js = platform.js
    found = []
    for info in sorted(await js.streams_info(), key=lambda i: i.config.name or ""):
        name = info.config.name or ""
        state = info.state
        consumers = []
        for c in sorted(await js.consumers_info(name), key=lambda c: c.name or ""):
            config = c.config
            filters = list(config.filter_subjects or []) or (
                [config.filter_subject] if config.filter_subject else []
            )
            pending = int(c.num_pending or 0)
            unacked = int(c.num_ack_pending or 0)
            consumers.append(
                {
                    "name": c.name,
                    "durable": bool(config.durable_name),
                    "filter": filters,
                    "delivered_seq": c.delivered.stream_seq if c.delivered else None,
                    "ack_floor_seq": c.ack_floor.stream_seq if c.ack_floor else None,
                    "num_pending": pending,
                    "num_ack_pending": unacked,
                    "lag": pending + unacked,
                }
            )
        found.append(
            {
                "name": name,
                "subjects": list(info.config.subjects or []),
                "messages": state.messages,
                "bytes": state.bytes,
                "first_seq": state.first_seq,
                "last_seq": state.last_seq,
                "last_time": _time(getattr(state, "last_ts", None)),
                "num_subjects": getattr(state, "num_subjects", None),
                "consumers": consumers,
            }
        )
    return found


def streams_command(args: argparse.Namespace) -> int:
    streams = run_on_platform(args, _collect)
    if args.json:
        print_json(streams)
        return 0
    print_table(
        [
            {
                **s,
                "subjects": ",".join(s["subjects"]),
                "messages": f"{s['messages']:,}",
                "bytes": human_bytes(s["bytes"]),
                "consumers": len(s["consumers"]),
            }
            for s in streams
        ],
        ("name", "subjects", "messages", "bytes", "first_seq", "last_seq", "consumers"),
    )
    rows = [
        {
            "stream": s["name"],
            **c,
            "filter": ",".join(c["filter"]) or "(all)",
            "durable": "yes" if c["durable"] else "no",
        }
        for s in streams
        for c in s["consumers"]
    ]
    print()
    print_table(
        rows,
        (
            "stream",
            "name",
            "durable",
            "filter",
            "delivered_seq",
            "ack_floor_seq",
            "num_pending",
            "num_ack_pending",
            "lag",
        ),
    )
    return 0
