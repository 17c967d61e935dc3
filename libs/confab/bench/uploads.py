"""Attachment uploads through the gateway: MB/s and latency for 100 KB and 5 MB files.

Each upload is the whole path: multipart into the gateway, streamed into the
NATS object store, ingested by media (type by content, SHA-256), stored in S3,
``attachment.stored`` appended and projected. The files are PDFs (a magic
header, then random bytes): accepted, and not compressible by anything.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import aiohttp
import psutil

from confab.bench.measure import Latencies, ProcessMeter

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
) -> tuple[Latencies, int, dict[str, int], float]:
    body = b"%PDF-1.4\n" + os.urandom(size - 9)
    latencies = Latencies()
    errors: dict[str, int] = {}
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            form = aiohttp.FormData()
            form.add_field("file", body, filename="bench.pdf", content_type="application/pdf")
            t0 = time.perf_counter()
            try:
                async with http.post(
                    url, data=form, headers={"Authorization": f"Bearer {token}"}
                ) as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            if status == 201:
                done += 1
                latencies.add(time.perf_counter() - t0)
            else:
                errors[str(status)] = errors.get(str(status), 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return latencies, done, errors, time.perf_counter() - started


async def run(info: dict[str, Any], *, seconds: float) -> dict[str, Any]:
    base = info["gateway_url"]
    per_size = max(2.0, seconds / len(SIZES))
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        conversation, token = await prepare(http, info)
        url = f"{base}/api/widget/conversations/{conversation}/attachments"
        await measure(http, url, token, 64 * 1024, 2, 1.0)  # warm up
        pids = {**info["pids"], "load generator": psutil.Process().pid}
        for label, size in SIZES.items():
            with ProcessMeter(pids, alone=("load generator",)) as meter:
                latencies, done, errors, elapsed = await measure(
                    http, url, token, size, WORKERS[label], per_size
                )
            results[label] = {
                "load": f"{WORKERS[label]} concurrent uploads of {label} for {per_size:.0f} s",
                "uploads": done,
                "uploads_per_s": round(done / elapsed, 1),
                "mb_per_s": round(done * size / elapsed / 2**20, 1),
                "errors": errors,
                "latency": latencies.summary(),
                "processes": meter.report(done, "upload"),
            }
    return {"scenario": "uploads", "sizes": results}


def print_result(r: dict[str, Any]) -> None:
    for label, s in r["sizes"].items():
        lat = s["latency"]
        print(f"\nuploads {label}: {s['load']}")
        print(
            f"  {s['mb_per_s']:>7.1f} MB/s  {s['uploads_per_s']:>7.1f} uploads/s  "
            f"errors {sum(s['errors'].values())}"
        )
        print(
            f"  latency ms p50 {lat['p50_ms']}  p90 {lat['p90_ms']}  p99 {lat['p99_ms']}  "
            f"max {lat['max_ms']}"
        )
        print(f"  {'process':<16}{'CPU s':>8}{'CPU ms/upload':>15}{'cores':>7}{'peak RSS MB':>13}")
        for name, p in s["processes"].items():
            print(
                f"  {name:<16}{p['cpu_seconds']:>8.2f}{p['cpu_ms_per_upload']:>15.2f}"
                f"{p['cpu_share']:>7.2f}{p['peak_rss_mb']:>13.1f}"
            )
