"""HAProxy in front of several copies of a service, from Debian's `haproxy` package.

A real load balancer, not a test double: clients of the gateway and the fanout go
through it exactly as they would in production, WebSocket upgrades included (HAProxy
switches a connection to tunnel mode after `101 Switching Protocols`). Each backend
server is health-checked over HTTP, so a copy that was killed or is paused (SIGSTOP)
stops receiving new connections within about two seconds.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from confab_infra.ports import BackendError, check_port_free, wait_tcp
from confab_infra.process import ChildProcess

__all__ = ["Frontend", "HAProxy", "find_haproxy"]

# Health checks every 500 ms; two misses take a server out, one success puts it back.
CHECK = "inter 500ms fall 2 rise 1"


@dataclass(frozen=True)
class Frontend:
    """One listening address spread over `servers` (host, port), checked with `GET check_path`."""

    name: str
    host: str
    port: int
    servers: tuple[tuple[str, int], ...]
    check_path: str = "/metrics"


def find_haproxy() -> Path:
    """The system's HAProxy (a Debian package: it has no PyPI wheel)."""
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).is_file()), None
    )
    if not found:
        raise BackendError(
            "HAProxy is not installed, and `confab up --cluster` puts the gateways and fanouts "
            "behind it: install Debian's package (`apt-get install haproxy`; `.ci/run` does "
            "so when run as root)"
        )
    return Path(found)


class HAProxy(ChildProcess):
    """`haproxy -db` (foreground) with a generated configuration in `<data_dir>/haproxy`."""

    name = "HAProxy"
    executable_name = "haproxy"
    stop_signal = signal.SIGUSR1  # soft stop: finish open connections, accept no new ones

    def __init__(self, data_dir: Path, frontends: Sequence[Frontend]) -> None:
        super().__init__(Path(data_dir) / "haproxy", "haproxy.log")
        self.frontends = list(frontends)

    def start(self, timeout: float = 20) -> None:
        with self._lock:
            if self.running():
                return
            deadline = time.monotonic() + timeout
            executable = find_haproxy()
            self.stop()
            for f in self.frontends:
                check_port_free(f"{self.name} ({f.name})", f.host, f.port)
            self.reclaim_leftover()
            self.home.mkdir(parents=True, exist_ok=True)
            config = self.home / "haproxy.cfg"
            config.write_text(self.config())
            check = self._run_check(executable, config)
            if check:
                raise BackendError(f"{self.name}: the generated configuration is refused: {check}")
            self._spawn([str(executable), "-db", "-f", str(config)], cwd=self.home)
            self._wait_ready(self._listening, deadline, "listening on every frontend")

    def stop(self, timeout: float = 10) -> None:
        # Soft stop waits for every WebSocket to close: give it little time, then kill.
        super().stop(min(timeout, 2))

    def config(self) -> str:
        lines = [
            "global",
            "  maxconn 4096",
            "defaults",
            "  mode http",
            "  option redispatch",
            "  option forwardfor",  # the services see (and limit) clients, not the balancer
            "  retries 2",
            "  timeout connect 2s",
            "  timeout client 120s",
            "  timeout server 120s",
            "  timeout tunnel 1h",  # an open WebSocket
            "  timeout http-request 30s",
            "  timeout check 1s",
        ]
        for f in self.frontends:
            lines += [
                f"frontend {f.name}",
                f"  bind {f.host}:{f.port}",
                f"  default_backend {f.name}_servers",
                f"backend {f.name}_servers",
                "  balance roundrobin",
                f"  option httpchk GET {f.check_path}",
                "  http-check expect status 200",
            ]
            lines += [
                f"  server {f.name}{i + 1} {host}:{port} check {CHECK}"
                for i, (host, port) in enumerate(f.servers)
            ]
        return "\n".join(lines) + "\n"

    def _listening(self) -> bool:
        return all(wait_tcp(f.host, f.port, 0) for f in self.frontends)

    @staticmethod
    def _run_check(executable: Path, config: Path) -> str:
        """`haproxy -c`: an error in the configuration, or "" when it is valid."""
        result = subprocess.run(
            [str(executable), "-c", "-q", "-f", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        return "" if result.returncode == 0 else (result.stderr or result.stdout).strip()
