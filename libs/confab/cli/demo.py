"""The demo workspace ``confab up`` creates once and prints.

Its API key and app secret are shown only at creation, so they are kept in
``<data-dir>/demo.json`` (readable by the owner only) for later starts.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from confab import bus
from confab.contracts.identity import CreateWorkspace, WorkspaceInput, WorkspaceWithSecrets
from confab.rpc import RpcClient

DEMO_NAME = "Demo"


def ensure_demo_workspace(info: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    path = data_dir / "demo.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    created = asyncio.run(_create(info["nats_url"]))
    demo = {
        "workspace_id": created.id,
        "api_key": created.api_key,
        "app_key": created.app_key,
        "app_secret": created.app_secret,
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(demo, indent=2))
    return demo


async def _create(nats_url: str) -> WorkspaceWithSecrets:
    nc = await bus.connect(nats_url, "confab-cli")
    try:
        reply: WorkspaceWithSecrets = await RpcClient(nc, timeout=10).call(
            CreateWorkspace(input=WorkspaceInput(name=DEMO_NAME), actor="confab up")
        )
        return reply
    finally:
        await nc.close()
