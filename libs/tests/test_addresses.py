"""The client address per-address limits use: the peer, or what a trusted proxy forwards."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from aiohttp.web import Request

from confab.addresses import TrustedProxies


def request(peer: str, forwarded: str | None = None) -> Request:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return make_mocked_request("GET", "/api/widget/me", headers=headers).clone(remote=peer)


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert TrustedProxies("").client(request("203.0.113.9", "198.51.100.1")) == "203.0.113.9"


def test_a_trusted_proxy_is_believed_about_the_address_it_forwards() -> None:
    proxies = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    assert proxies.client(request("127.0.0.1", "198.51.100.1")) == "198.51.100.1"
    # Right to left past trusted hops; what the client wrote on the left proves nothing.
    assert proxies.client(request("10.1.2.3", "1.1.1.1, 198.51.100.1, 10.0.0.7")) == "198.51.100.1"
    assert proxies.client(request("127.0.0.1")) == "127.0.0.1"  # nothing forwarded
    assert proxies.client(request("127.0.0.1", "10.0.0.7")) == "127.0.0.1"  # only proxies
    # A peer that is not a proxy cannot name another client.
    assert proxies.client(request("203.0.113.9", "198.51.100.1")) == "203.0.113.9"


def test_a_bad_proxy_address_is_named() -> None:
    with pytest.raises(ValueError, match="CONFAB_TRUSTED_PROXIES: 'gateway' is not"):
        TrustedProxies("127.0.0.1,gateway")
