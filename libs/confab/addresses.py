"""Who is calling, by address: the peer, or the client a trusted proxy says it forwards.

Per-address limits (the gateway's failed authentications and ``/demo``, the fanout's
connections per address) need the client's address.
Behind a load balancer the peer is the balancer, shared by every client, so the
addresses in ``CONFAB_TRUSTED_PROXIES`` are believed about ``X-Forwarded-For``:
the client is its right-most address that is not itself a trusted proxy (what
is left of that was written by the client and proves nothing).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    def __init__(self, spec: str) -> None:
        """``spec``: comma-separated addresses or networks (``10.0.0.0/8``); ValueError if bad."""
        self.networks: tuple[Network, ...] = tuple(
            _network(part.strip()) for part in spec.split(",") if part.strip()
        )

    def client(self, request: web.BaseRequest) -> str:
        peer = request.remote or "-"
        if not self.networks or not self._trusted(peer):
            return peer
        for hop in reversed(request.headers.get("X-Forwarded-For", "").split(",")):
            hop = hop.strip()
            if hop and not self._trusted(hop):
                return hop
        return peer

    def trusts(self, address: str) -> bool:
        """``address`` is one of the trusted proxies (its clients are behind it)."""
        return bool(self.networks) and self._trusted(address)

    def _trusted(self, address: str) -> bool:
        return _is_in(address, self.networks)


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"CONFAB_TRUSTED_PROXIES: {text!r} is not an IP address or network"
        ) from None


@lru_cache(maxsize=4096)
def _is_in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
