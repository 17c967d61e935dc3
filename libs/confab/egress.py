"""Outbound safety: a URL someone else chose must not reach inside the platform's network.

The one definition of which addresses the platform's outbound HTTP may reach, used by
every service that connects to a URL it was given: webhook endpoints
(``confab_webhooks``), link previews (``confab_media.previews``), web-push endpoints.

A host is checked when its URL is accepted and, what counts, at every
connection: the resolver the HTTP client uses drops every address that is loopback,
private, link-local, shared (100.64/10), multicast, reserved or unspecified, and the
cloud metadata addresses, so a name that resolves (or later re-resolves: DNS rebinding)
to one of them is never connected to. An IP literal in the URL is checked before the
request (the client does not resolve those). IPv6 forms that carry an IPv4 address
(mapped, 6to4, Teredo, NAT64) are judged by that address. The operator may allow
private addresses (``CONFAB_WEBHOOKS_ALLOW_PRIVATE`` and the like: ``confab up`` on one
machine, tests), never by default.

A client that follows redirects must check every ``Location`` as it checks the first URL
(``check_url``, ``check_host``) and connect through ``GuardedResolver`` each time; webhooks
follow none (a 3xx is a failed attempt).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from confab.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata and platform services reachable from inside a VM, some at public
# addresses (Azure's wireserver).
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, …
        "169.254.169.123",  # AWS time
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wireserver
        "192.0.0.192",  # Oracle Cloud
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class RefusedAddress(OSError):
    """The host is (or resolves only to) an address outbound requests may not reach."""


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(address: str | IPAddress) -> str | None:
    """Why outbound requests may not go to ``address``; None if it is a public address."""
    try:
        ip = ipaddress.ip_address(str(address).split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            found = refusal(inner)
            return found and f"{found} (inside {ip})"
    if ip in METADATA:
        return "a cloud metadata address"
    checks = (
        ("a loopback address", ip.is_loopback),
        ("an unspecified address", ip.is_unspecified),
        ("a link-local address", ip.is_link_local),
        ("a multicast address", ip.is_multicast),
        ("a private address", ip.is_private),
        ("a reserved address", ip.is_reserved),
    )
    for why, hit in checks:
        if hit:
            return why
    if not ip.is_global:
        return "not a public address"
    return None


def refused(address: str | IPAddress, *, loopback_only: bool = False) -> str | None:
    """``refusal``; with ``loopback_only`` (tests only: a receiver the test serves on this
    machine) loopback passes and every other address is refused, public ones too, so a
    test never reaches beyond the machine."""
    why = refusal(address)
    if not loopback_only:
        return why
    if why is not None and why.startswith("a loopback address"):
        return None
    return why or "not a loopback address (the test-only setting allows loopback alone)"


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def check_url(url: str) -> tuple[str, int]:
    """The host and port of a URL, or InvalidRequest: http(s) only, a host, no
    credentials, no fragment."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRequest("The URL is not valid.", {"url": "not a valid URL"}) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("The URL must be http(s)://host/….", {"url": "http or https"})
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(
            "The URL must not carry credentials.", {"url": "no user:password@ in the URL"}
        )
    if parts.fragment:
        raise InvalidRequest("The URL must not have a fragment.", {"url": "no #fragment"})
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_host(host: str, allow_private: bool, what: str = "Webhooks") -> None:
    """InvalidRequest if ``host`` is an IP literal outbound requests may not reach
    (``what``: who is refused, for the message)."""
    ip = ip_literal(host)
    if ip is None or allow_private:
        return
    why = refusal(ip)
    if why is not None:
        raise InvalidRequest(f"{what} cannot be sent to {why}.", {"url": f"the host is {why}"})


async def check_resolved(host: str, port: int, allow_private: bool, what: str = "Webhooks") -> None:
    """InvalidRequest if ``host`` resolves only to addresses outbound requests may not reach
    (a name that does not resolve now is accepted: each connection checks again)."""
    check_host(host, allow_private, what)
    if allow_private or ip_literal(host) is not None:
        return
    resolver = GuardedResolver(allow_private=False)
    try:
        await resolver.resolve(host, port)
    except RefusedAddress as exc:
        raise InvalidRequest(
            f"{what} cannot be sent to {host}: {exc}.", {"url": str(exc)}
        ) from None
    except OSError:
        pass
    finally:
        await resolver.close()


class GuardedResolver(AbstractResolver):
    """The system resolver, with every address outbound requests may not reach left out.

    aiohttp connects to the addresses a resolver returns, so what is checked here is what
    is connected to: no second resolution a rebinding DNS server could answer differently."""

    def __init__(
        self,
        *,
        allow_private: bool,
        inner: AbstractResolver | None = None,
        loopback_only: bool = False,
    ) -> None:
        if inner is None:
            from aiohttp.resolver import ThreadedResolver

            inner = ThreadedResolver()
        self.inner = inner
        self.allow_private = allow_private
        self.loopback_only = loopback_only

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        if self.allow_private:
            return found
        only = self.loopback_only
        kept = [r for r in found if refused(r["host"], loopback_only=only) is None]
        if not kept:
            reasons = sorted({refused(r["host"], loopback_only=only) or "" for r in found} - {""})
            raise RefusedAddress(f"{host} resolves only to {', '.join(reasons) or 'nothing'}")
        return kept

    async def close(self) -> None:
        await self.inner.close()


def plain_results(host: str, addresses: list[str], port: int) -> list[Any]:
    """Resolver results for ``addresses`` (tests give a resolver fixed answers)."""
    return [
        {
            "hostname": host,
            "host": a,
            "port": port,
            "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
            "proto": 0,
            "flags": socket.AI_NUMERICHOST,
        }
        for a in addresses
    ]
