"""Ports and URLs (pick free ports, reserve configured ones, refuse busy ones, reject
malformed URLs early), and `BackendError`, the one error every backend raises: a plain
message, never a traceback.

**A port we pick or are given stays ours.** Several components start at the same moment
(the backends in parallel, each service after them), and a port that was merely checked
free can be taken by any of them, or by anyone on the machine, before its owner listens.
So every port `free_port` picks and every port `reserve`d is *held* by this process: a
socket bound to it with SO_REUSEADDR and not listening. The kernel never hands a bound
port to another `bind(0)` or outgoing connection, and a plain `bind` fails on it; but the
server we start there (aiohttp, nats-server, postgres, weed and haproxy all set
SO_REUSEADDR) can still bind and listen, because no socket listens on it yet. The hold
lasts as long as this process (or until `release`), so a service restarted after a crash
finds its port still free.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from urllib.parse import urlsplit

import psutil

__all__ = [
    "BackendError",
    "check_port_free",
    "check_url",
    "free_port",
    "release",
    "reserve",
    "wait_tcp",
]


class BackendError(Exception):
    """One plain line for the operator, e.g. 'NATS: port 4222 on 127.0.0.1 is already in use'."""


_held: dict[int, socket.socket] = {}  # port -> the bound socket that keeps it ours
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on, held for this process (see the module note)."""
    with _lock:
        for _ in range(100):
            sock = _bound(host, 0)
            port: int = sock.getsockname()[1]
            if port not in _held:
                _held[port] = sock
                return port
            sock.close()
    raise BackendError(f"no free TCP port on {host}")


def reserve(name: str, host: str, port: int) -> None:
    """Hold `host:port` for component `name` from now on, so that no other component is
    given it while they all start; fail with one line if something listens there."""
    with _lock:
        if port in _held:
            return
        try:
            _held[port] = _bound(host, port)
        except OSError as exc:
            raise _busy(name, host, port, exc) from None


def release(*ports: int) -> None:
    """Give back ports held by `free_port` or `reserve`."""
    with _lock:
        for port in ports:
            sock = _held.pop(port, None)
            if sock is not None:
                sock.close()


def check_port_free(name: str, host: str, port: int) -> None:
    """Fail fast, naming the service, when `host:port` cannot be listened on."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # Mirror what servers do, so a port in TIME_WAIT does not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            raise _busy(name, host, port, exc) from None


def _bound(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` with SO_REUSEADDR, not listening."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.set_inheritable(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _busy(name: str, host: str, port: int, exc: OSError) -> BackendError:
    if exc.errno != errno.EADDRINUSE:
        reason = exc.strerror or str(exc)
        return BackendError(f"{name}: cannot listen on {host} port {port}: {reason}")
    return BackendError(f"{name}: port {port} on {host} is already in use{_listener(port)}")


def _listener(port: int) -> str:
    """' by pid N (command)' for the process listening on `port`, when we may see it; a
    service of a `confab up` is named by that `confab up`, which is the one to stop."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections("tcp"):
            if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
                continue
            if conn.pid is None:  # another user's process
                return ""
            proc = psutil.Process(conn.pid)
            for owner in (proc, *proc.parents()):
                if _is_confab_up(owner.cmdline()):
                    return f" by confab up pid {owner.pid} (`kill {owner.pid}` stops it)"
            return f" by pid {proc.pid} ({' '.join(proc.cmdline())[:80] or proc.name()})"
    return ""


def _is_confab_up(argv: list[str]) -> bool:
    """`.../confab up ...`, however it was started (the script, or `python .../confab up`)."""
    names = [arg.rsplit("/", 1)[-1] for arg in argv[:2]]
    if "confab" not in names:
        return False
    after = names.index("confab") + 1
    return argv[after : after + 1] == ["up"]


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
