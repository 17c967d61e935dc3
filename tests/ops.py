"""Helpers of the operator command-line tests: run ``confab``, make chat traffic, and wait
until a stack's read models have applied its whole log."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from typing import Any

import asyncpg
from nats.js.errors import NotFoundError

from confab import bus
from confab.db import plain_url
from confab.projection import NOTIFY_CHANNEL
from confab.readmodels import read_models
from tests.client import Api
from tests.stack import CONFAB, RunningStack


def confab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CONFAB, *args], capture_output=True, text=True, timeout=timeout)


def target(stack: RunningStack) -> list[str]:
    return ["--data-dir", str(stack.data_dir)]


class Chat:
    """A workspace with a tenant client, users with widget sessions, and conversations."""

    def __init__(self, admin: Api, workspace: dict[str, Any]) -> None:
        self.workspace = workspace
        self.id = str(workspace["id"])
        self.tenant = admin.as_(**{"X-API-Key": workspace["api_key"]})
        self.widgets: dict[str, Api] = {}

    @classmethod
    async def create(cls, admin: Api, name: str = "Ops") -> Chat:
        status, workspace = await admin.post("/api/admin/workspaces", {"name": name})
        assert status == 201, workspace
        return cls(admin, workspace)

    async def user(self, name: str) -> dict[str, Any]:
        status, user = await self.tenant.post(
            "/api/v1/users", {"external_id": f"{name}-{uuid.uuid4().hex[:6]}", "name": name}
        )
        assert status == 201, user
        status, session = await self.tenant.post("/api/v1/sessions", {"user_id": user["id"]})
        assert status == 201, session
        self.widgets[user["id"]] = self.tenant.as_(Authorization=f"Bearer {session['token']}")
        return dict(user)

    async def conversation(self, *users: dict[str, Any], title: str = "Room") -> str:
        status, conv = await self.tenant.post(
            "/api/v1/conversations",
            {"participant_ids": [u["id"] for u in users], "type": "group", "title": title},
        )
        assert status == 201, conv
        return str(conv["id"])

    async def send(self, user: dict[str, Any], conversation_id: str, text: str) -> dict[str, Any]:
        status, message = await self.widgets[user["id"]].post(
            f"/api/widget/conversations/{conversation_id}/messages", {"content": text}
        )
        assert status == 201, message
        return dict(message)


async def wait_caught_up(stack: RunningStack, timeout: float = 90) -> dict[str, int]:
    """Until every read model's checkpoint has reached the last event it follows (woken by
    the checkpoints' NOTIFY, not by polling); returns the checkpoints."""
    nc = await bus.connect(stack.info["nats_url"], "test-wait")
    targets: dict[tuple[str, str], int] = {}
    try:
        for model in read_models().values():
            for projection in model.projections():
                last = 0
                for subject in projection.subjects:
                    try:
                        found = await nc.jetstream().get_last_msg(
                            projection.stream, subject, direct=False
                        )
                    except NotFoundError:
                        continue
                    last = max(last, found.seq or 0)
                targets[(model.schema, projection.name)] = last
    finally:
        await nc.close()
    conn = await asyncpg.connect(plain_url(stack.info["database_url"]))
    woken = asyncio.Event()
    await conn.add_listener(NOTIFY_CHANNEL, lambda *_: woken.set())
    try:
        async with asyncio.timeout(timeout):
            while True:
                woken.clear()
                seen: dict[str, int] = {}
                for schema in {s for s, _ in targets}:
                    rows = await conn.fetch(
                        f'SELECT name, last_seq FROM "{schema}".projection_checkpoints'
                    )
                    seen.update({r["name"]: r["last_seq"] for r in rows})
                if all(seen.get(name, 0) >= last for (_, name), last in targets.items()):
                    return seen
                await woken.wait()
    finally:
        await conn.close()
