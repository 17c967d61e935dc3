"""``confab webhooks status``: endpoints per workspace, the backlog, failing endpoints.

Reads the webhooks service's tables (schema ``webhooks``) and the intakes' checkpoints
against the streams' last sequences: what is queued, how far behind the intake is, and
which endpoints fail or were disabled, with why.
"""

from __future__ import annotations

import argparse
from typing import Any

import sqlalchemy as sa

from confab.cli.context import (
    Platform,
    add_target_options,
    print_json,
    print_table,
    run_on_platform,
)

SOURCES = {"conversations": "CONVERSATIONS", "identity": "IDENTITY", "media": "MEDIA"}


def add_parser(commands: Any) -> None:
    p = commands.add_parser("webhooks", help="tenants' webhook endpoints and their deliveries")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = sub.add_parser(
        "status", help="endpoints per workspace, backlog, failing or disabled endpoints"
    )
    add_target_options(status, database=True)
    status.set_defaults(run=show_status)


ENDPOINTS = """
SELECT e.workspace_id,
       count(*) AS endpoints,
       count(*) FILTER (WHERE e.enabled) AS enabled,
       count(*) FILTER (WHERE NOT e.enabled) AS disabled
FROM webhooks.endpoints e WHERE NOT e.deleted
GROUP BY e.workspace_id ORDER BY e.workspace_id
"""
BACKLOG = """
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       min(stored_at) FILTER (WHERE status = 'pending') AS oldest_pending
FROM webhooks.deliveries
"""
FAILING = """
SELECT e.id, e.workspace_id, e.url, e.enabled, e.disabled_reason,
       h.failing_since, h.last_error,
       (SELECT count(*) FROM webhooks.deliveries d
        WHERE d.endpoint_id = e.id AND d.status = 'pending') AS pending
FROM webhooks.endpoints e LEFT JOIN webhooks.endpoint_health h ON h.endpoint_id = e.id
WHERE NOT e.deleted AND (NOT e.enabled OR h.failing_since IS NOT NULL)
ORDER BY h.failing_since NULLS LAST, e.id
"""
CHECKPOINTS = "SELECT name, last_seq FROM webhooks.projection_checkpoints"


async def status(platform: Platform) -> dict[str, Any]:
    async with platform.engine.connect() as conn:
        try:
            workspaces = [dict(r._mapping) for r in (await conn.execute(sa.text(ENDPOINTS)))]
        except sa.exc.ProgrammingError:
            raise SystemExit(
                "confab: no webhooks tables in this database; is the webhooks service running?"
            ) from None
        backlog = dict((await conn.execute(sa.text(BACKLOG))).one()._mapping)
        failing = [dict(r._mapping) for r in (await conn.execute(sa.text(FAILING)))]
        checkpoints = {r.name: int(r.last_seq) for r in await conn.execute(sa.text(CHECKPOINTS))}
    lag = {}
    for source, stream in SOURCES.items():
        info = await platform.js.stream_info(stream)
        done = checkpoints.get(f"webhooks.{source}", 0)
        lag[stream] = max(0, int(info.state.last_seq) - done)
    backlog["intake_behind"] = lag
    return {"workspaces": workspaces, "backlog": backlog, "failing": failing}


def show_status(args: argparse.Namespace) -> int:
    found = run_on_platform(args, status, database=True)
    if args.json:
        print_json(found)
        return 0
    print("Endpoints per workspace")
    print_table(found["workspaces"], ("workspace_id", "endpoints", "enabled", "disabled"))
    b = found["backlog"]
    behind = ", ".join(f"{s} {n}" for s, n in b["intake_behind"].items())
    print()
    oldest = b["oldest_pending"] or "-"
    print(
        f"Backlog: {b['pending']} pending deliveries (oldest event stored {oldest}), "
        f"{b['failed']} failed; intake behind: {behind}"
    )
    print()
    print("Failing or disabled endpoints")
    rows = [
        {
            **r,
            "state": "enabled" if r["enabled"] else "disabled",
            "why": (r["disabled_reason"] or r["last_error"] or "")[:80],
        }
        for r in found["failing"]
    ]
    print_table(rows, ("id", "workspace_id", "state", "failing_since", "pending", "why"))
    return 0
