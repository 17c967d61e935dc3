"""Attachment uploads through the gateway: MB/s and latency for 100 KB and 5 MB files.

Each upload is the whole path: multipart into the gateway, streamed into the
NATS object store, ingested by media (type by content, SHA-256), stored in S3,
``attachment.stored`` appended and projected. The files are PDFs (a magic
header, then random bytes): accepted, and not compressible by anything. Each
upload answered 201 is counted on arrival when its attachment can be fetched.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Any

import aiohttp

from confab.bench.measure import Latencies, LoopLag, ProcessMeter, with_generator
from confab.bench.result import Tally, add_error, run_record

SIZES = {"100KB": 100 * 1024, "5MB": 5 * 1024 * 1024}
WORKERS = {"100KB": 16, "5MB": 4}


async def prepare(http: aiohttp.ClientSession, info: dict[str, Any]) -> tuple[str, str]:
    """A conversation and the session of its uploader."""
    base = info["gateway_url"]
    admin = {"Authorization": f"Bearer {info['admin_token']}"}
    async with http.post(
        f"{base}/api/admin/workspaces", json={"name": "bench"}, headers=admin
    ) as r:
        key = {"X-API-Key": (await r.json())["api_key"]}
    ids = []
    for side in ("a", "b"):
        async with http.post(
            f"{base}/api/v1/users",
            headers=key,
            json={"external_id": f"up-{side}-{uuid.uuid4().hex[:6]}", "name": side},
        ) as r:
            ids.append((await r.json())["id"])
    async with http.post(
        f"{base}/api/v1/conversations", headers=key, json={"participant_ids": ids, "type": "direct"}
    ) as r:
        conversation = (await r.json())["id"]
    async with http.post(f"{base}/api/v1/sessions", headers=key, json={"user_id": ids[0]}) as r:
        token = (await r.json())["token"]
    return conversation, token


async def measure(
    http: aiohttp.ClientSession, url: str, token: str, size: int, workers: int, seconds: float
) -> tuple[Latencies, list[str], dict[str, int]]:
    """Closed loop of ``workers`` uploaders; the ids of the attachments answered 201."""
    body = b"%PDF-1.4\n" + os.urandom(size - 9)
    latencies = Latencies()
    errors: dict[str, int] = {}
    ids: list[str] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            form = aiohttp.FormData()
            form.add_field("file", body, filename="bench.pdf", content_type="application/pdf")
            t0 = time.perf_counter()
            try:
                async with http.post(
                    url, data=form, headers={"Authorization": f"Bearer {token}"}
                ) as r:
                    answer = await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                add_error(errors, type(exc).__name__)
                continue
            if status == 201:
                ids.append(json.loads(answer)["id"])
                latencies.add(time.perf_counter() - t0)
            else:
                add_error(errors, str(status))

    await asyncio.gather(*(worker() for _ in range(workers)))
    return latencies, ids, errors


async def stored(
    http: aiohttp.ClientSession, base: str, token: str, ids: list[str], timeout: float = 30.0
) -> Tally:
    """Each upload counted on arrival: ``GET /api/widget/attachments/{id}`` answers 200."""
    tally = Tally()
    tally.expect(len(ids))
    headers = {"Authorization": f"Bearer {token}"}
    slots = asyncio.Semaphore(16)
    deadline = time.perf_counter() + timeout

    async def one(attachment: str) -> None:
        while True:
            async with (
                slots,
                http.get(f"{base}/api/widget/attachments/{attachment}", headers=headers) as r,
            ):
                await r.read()
                if r.status == 200:
                    tally.arrive(attachment)
                    return
            if time.perf_counter() > deadline:
                return
            await asyncio.sleep(0.2)

    await asyncio.gather(*(one(a) for a in ids))
    return tally


async def run(info: dict[str, Any], *, seconds: float) -> list[dict[str, Any]]:
    base = info["gateway_url"]
    per_size = max(2.0, seconds / len(SIZES))
    runs = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        conversation, token = await prepare(http, info)
        url = f"{base}/api/widget/conversations/{conversation}/attachments"
        await measure(http, url, token, 64 * 1024, 2, 1.0)  # warm up
        for label, size in SIZES.items():
            meter = ProcessMeter(with_generator(info["pids"]))
            with meter, LoopLag() as lag:
                latencies, ids, errors = await measure(
                    http, url, token, size, WORKERS[label], per_size
                )
            tally = await stored(http, base, token, ids)
            runs.append(
                run_record(
                    label,
                    f"{WORKERS[label]} concurrent uploads of {label} for {per_size:g} s",
                    unit="upload",
                    work=len(ids),
                    latencies=latencies,
                    meter=meter,
                    lag=lag,
                    loss=tally.counts(),
                    errors=errors,
                    mb_per_s=round(len(ids) * size / meter.elapsed / 2**20, 1),
                )
            )
    return runs
