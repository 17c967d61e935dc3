"""The demo workspace ``confab up`` creates once and prints, with its first owner.

Its API key and app secret are shown only at creation, so they are kept in
``<data-dir>/demo.json`` (readable by the owner only) for later starts, with the
dashboard login of its first owner (a generated password; a data directory from
before the dashboard gets its owner on its next start).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

from confab import bus
from confab.contracts.identity import (
    CreateOwner,
    CreateWorkspace,
    OwnerInput,
    WorkspaceInput,
    WorkspaceWithSecrets,
)
from confab.errors import Conflict
from confab.rpc import RpcClient

DEMO_NAME = "Demo"
DEMO_OWNER_EMAIL = "owner@demo.example"
DEMO_OWNER_NAME = "Demo Owner"


def ensure_demo_workspace(info: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    path = data_dir / "demo.json"
    demo: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if demo and "owner" in demo:
        return demo
    demo = asyncio.run(_create(info["nats_url"], demo))
    path.touch(mode=0o600)
    path.write_text(json.dumps(demo, indent=2))
    return demo


def new_password() -> str:
    """A generated first password: 16 URL-safe characters (96 bits)."""
    return secrets.token_urlsafe(12)


async def _create(nats_url: str, demo: dict[str, Any]) -> dict[str, Any]:
    nc = await bus.connect(nats_url, "confab-cli")
    try:
        rpc = RpcClient(nc, timeout=10)
        if not demo:
            created: WorkspaceWithSecrets = await rpc.call(
                CreateWorkspace(input=WorkspaceInput(name=DEMO_NAME), actor="confab up")
            )
            demo = {
                "workspace_id": created.id,
                "api_key": created.api_key,
                "app_key": created.app_key,
                "app_secret": created.app_secret,
            }
        password = new_password()
        owner = OwnerInput(email=DEMO_OWNER_EMAIL, name=DEMO_OWNER_NAME, password=password)
        try:
            await rpc.call(CreateOwner(workspace_id=demo["workspace_id"], input=owner))
            demo["owner"] = {"email": DEMO_OWNER_EMAIL, "password": password}
        except Conflict:  # someone made a team by other means: leave it be
            demo["owner"] = {}
        return demo
    finally:
        await nc.close()


def dashboard_url(gateway_url: str, workspace_id: str) -> str:
    return f"{gateway_url}/dashboard/#workspace={workspace_id}"
