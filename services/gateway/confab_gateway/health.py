"""``/healthz``: the gateway asks every service over NATS and reports them all."""

from __future__ import annotations

import asyncio
from typing import Any

from confab.contracts.system import SERVICES, HealthQuery, HealthReply
from confab.errors import ConfabError
from confab.rpc import RpcClient


async def platform_health(client: RpcClient, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    async def ask(service: str) -> dict[str, Any]:
        try:
            reply: HealthReply = await client.call(
                HealthQuery(), subject=HealthQuery.subject_for(service), timeout=timeout
            )
        except ConfabError as exc:
            return {"status": "down", "error": exc.message}
        return {"status": reply.status, "instance": reply.instance, "checks": reply.checks}

    answers = await asyncio.gather(*(ask(s) for s in SERVICES))
    services = {"gateway": {"status": "ok"}, **dict(zip(SERVICES, answers, strict=True))}
    healthy = all(s["status"] == "ok" for s in services.values())
    return (200 if healthy else 503), {
        "status": "ok" if healthy else "degraded",
        "services": services,
    }
