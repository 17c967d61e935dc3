"""Outbound safety: the address check itself, the resolver that applies it at every
connection, and the client refusing a loopback receiver when private addresses are not
allowed (the receiver proves nothing connected). No test connects anywhere but loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from confab.egress import (
    GuardedResolver,
    RefusedAddress,
    check_host,
    check_resolved,
    check_url,
    plain_results,
    refusal,
)
from confab.errors import InvalidRequest
from confab_infra.backends import free_port
from confab_webhooks.outbound import Outbound
from confab_webhooks.settings import WebhooksSettings

REFUSED = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "::1": "loopback",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "172.31.255.254": "private",
    "192.168.1.1": "private",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "169.254.169.254": "metadata",
    "169.254.10.10": "link-local",
    "fe80::1": "link-local",
    "fd00:ec2::254": "metadata",
    "100.100.100.200": "metadata",
    "168.63.129.16": "metadata",  # public, but Azure's wireserver
    "100.64.0.1": "not a public",  # shared address space (carrier NAT)
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "240.0.0.1": "private",  # Python counts 240/4 as private (it is reserved)
    "198.18.0.1": "private",  # benchmarking networks
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "::ffff:169.254.169.254": "metadata",
    "2002:7f00:1::": "loopback",  # 6to4 of 127.0.0.1
    "64:ff9b::a9fe:a9fe": "metadata",  # NAT64 of 169.254.169.254
    "fe80::1%eth0": "link-local",
}
PUBLIC = ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "8.8.8.8"]


@pytest.mark.parametrize(("address", "why"), REFUSED.items())
def test_private_loopback_link_local_and_metadata_addresses_are_refused(
    address: str, why: str
) -> None:
    found = refusal(address)
    assert found is not None and why in found, (address, found)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(address) is None


def test_urls_must_be_plain_http_or_https() -> None:
    assert check_url("https://hooks.example.com/in") == ("hooks.example.com", 443)
    assert check_url("http://hooks.example.com:8080/x?y=1") == ("hooks.example.com", 8080)
    for bad in (
        "ftp://example.com/x",
        "https://user:pw@example.com/x",
        "https://example.com/x#frag",
        "https://example.com:99999/",
        "https:///nohost",
    ):
        with pytest.raises(InvalidRequest):
            check_url(bad)


def test_ip_literals_are_refused_unless_allowed() -> None:
    for host in ("127.0.0.1", "[::1]", "169.254.169.254", "10.0.0.1"):
        with pytest.raises(InvalidRequest):
            check_host(host, allow_private=False)
        check_host(host, allow_private=True)
    check_host("hooks.example.com", allow_private=False)  # names are checked when resolved


class Fixed(AbstractResolver):
    """A resolver with fixed answers: no DNS, no network."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        self.asked.append(host)
        return plain_results(host, self.answers[host], port)

    async def close(self) -> None:
        pass


async def test_the_resolver_drops_refused_addresses_and_refuses_names_with_nothing_left() -> None:
    inner = Fixed(
        {
            "metadata.internal": ["169.254.169.254"],
            "rebind.example": ["10.0.0.7", "127.0.0.1"],
            "mixed.example": ["10.0.0.7", "93.184.215.14"],
        }
    )
    guarded = GuardedResolver(allow_private=False, inner=inner)
    with pytest.raises(RefusedAddress, match="metadata"):
        await guarded.resolve("metadata.internal", 80)
    with pytest.raises(RefusedAddress, match="loopback"):
        await guarded.resolve("rebind.example", 443)
    kept = await guarded.resolve("mixed.example", 443)
    assert [r["host"] for r in kept] == ["93.184.215.14"]
    allowing = GuardedResolver(allow_private=True, inner=inner)
    assert len(await allowing.resolve("rebind.example", 443)) == 2


async def test_configuring_a_name_that_resolves_to_loopback_is_refused() -> None:
    # "localhost" resolves locally (no DNS traffic) to loopback only.
    with pytest.raises(InvalidRequest, match="loopback"):
        await check_resolved("localhost", 80, allow_private=False)
    await check_resolved("localhost", 80, allow_private=True)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A loopback receiver that counts every request it gets; /redirect answers 302,
    /big answers 200 with 1 MB, /slow never answers in time."""
    seen: list[web.Request] = []
    release = asyncio.Event()

    async def hook(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        await request.read()
        if request.path == "/redirect":
            raise web.HTTPFound("/elsewhere")
        if request.path == "/big":
            return web.Response(status=500, body=b"x" * 1_000_000)
        if request.path == "/slow":
            await release.wait()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", seen
    release.set()
    await runner.cleanup()


async def outbound(**settings: Any) -> Outbound:
    client = Outbound(WebhooksSettings(**settings))
    await client.start()
    return client


async def test_a_loopback_endpoint_is_never_connected_to_unless_allowed(
    receiver: tuple[str, list[web.Request]],
) -> None:
    base, seen = receiver
    strict = await outbound(allow_private=False)
    named = base.replace("127.0.0.1", "localhost")
    try:
        for url in (f"{base}/hook", f"{named}/hook"):
            answer = await strict.post(url, b"{}", {})
            assert answer.status is None and answer.error is not None
            assert answer.error.startswith("refused"), answer.error
    finally:
        await strict.stop()
    assert seen == []
    allowing = await outbound(allow_private=True)
    try:
        answer = await allowing.post(f"{base}/hook", b"{}", {})
    finally:
        await allowing.stop()
    assert answer.status == 200 and len(seen) == 1


async def test_redirects_are_not_followed_bodies_are_cut_and_attempts_time_out(
    receiver: tuple[str, list[web.Request]],
) -> None:
    base, seen = receiver
    client = await outbound(
        allow_private=True,
        response_limit_bytes=64,
        timeout_seconds=0.5,
    )
    try:
        moved = await client.post(f"{base}/redirect", b"{}", {})
        big = await client.post(f"{base}/big", b"{}", {})
        slow = await client.post(f"{base}/slow", b"{}", {})
    finally:
        await client.stop()
    assert moved.status == 302 and [r.path for r in seen].count("/elsewhere") == 0
    assert big.status == 500 and big.error is not None
    assert len(big.error) < 100 and big.error.startswith("HTTP 500: xxx")
    assert slow.status is None and slow.error == "timed out"
