"""Ports and URLs (pick free ports, refuse busy ones, reject malformed URLs early), and
`BackendError`, the one error every backend raises: a plain message, never a traceback.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from urllib.parse import urlsplit

__all__ = ["BackendError", "check_port_free", "check_url", "free_port", "wait_tcp"]


class BackendError(Exception):
    """One plain line for the operator, e.g. 'NATS: port 4222 on 127.0.0.1 is already in use'."""


# Ports this process has handed out: several backends pick ports concurrently and the
# kernel may offer the same just-released port twice before anyone binds it.
_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (and not handed out before by this process)."""
    with _lock:
        for _ in range(100):
            with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise BackendError(f"no free TCP port on {host}")


def check_port_free(name: str, host: str, port: int) -> None:
    """Fail fast, naming the service, when `host:port` cannot be listened on."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # Mirror what servers do, so a port in TIME_WAIT does not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BackendError(f"{name}: port {port} on {host} is already in use") from None
            reason = exc.strerror or str(exc)
            raise BackendError(f"{name}: cannot listen on {host} port {port}: {reason}") from None


def check_url(name: str, url: str, schemes: tuple[str, ...]) -> None:
    """Reject a malformed URL with a message naming where it came from (`name`).

    Accepts the multi-server forms `nats://a:4222,nats://b:4222` and
    `postgresql://a:5432,b:5432/db`.
    """

    def bad(reason: str) -> BackendError:
        return BackendError(f"{name} {url!r} is not a valid URL: {reason}")

    expected = " or ".join(f"{scheme}://" for scheme in schemes)
    parts = url.split(",")
    if len(parts) == 1 or not all("://" in part for part in parts):
        parts = [url]
    for part in parts:
        try:
            split = urlsplit(part.strip())
        except ValueError as exc:
            raise bad(str(exc)) from None
        if split.scheme not in schemes:
            raise bad(f"it must start with {expected}")
        hosts = split.netloc.rpartition("@")[2]
        if not hosts:
            raise bad("no host")
        for hostport in hosts.split(","):
            try:
                address = urlsplit(f"//{hostport}")
                host, _port = address.hostname, address.port
            except ValueError as exc:
                raise bad(str(exc)) from None
            if not host:
                raise bad(f"no host in {hostport!r}")


def wait_tcp(host: str, port: int, timeout: float) -> bool:
    """True as soon as `host:port` accepts a TCP connection, False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.05, min(1.0, timeout))):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
