"""The distributed topology on this machine, with backends the fault tests can break.

`cluster` is one ``confab up --cluster`` for the fault tests (two copies of every
service, gateways and fanouts behind HAProxy) on backends of its own, owned here so a
test can kill or stop them and start them again at the same address: a 3-node NATS
cluster (streams at R3), PostgreSQL and S3. The session's shared backends are never
touched, so the other tests are unaffected.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import pytest

from confab import bus
from confab.db import create_engine
from confab.projection import partition_holders
from confab_infra.backends import (
    BackendError,
    EmbeddedNats,
    EmbeddedNatsCluster,
    EmbeddedPostgres,
    EmbeddedS3,
    free_port,
)
from confab_infra.balancer import find_haproxy
from confab_infra.nats_auth import Credentials
from confab_infra.testing import temp_data_dir
from confab_messaging.projections import ConversationsProjection
from tests.faults.load import Figures
from tests.stack import RunningStack, running_stack


@dataclass
class Cluster:
    stack: RunningStack
    nats: EmbeddedNatsCluster
    postgres: EmbeddedPostgres
    s3: EmbeddedS3

    @property
    def info(self) -> dict[str, Any]:
        return self.stack.info

    async def stream_leader(self, stream: str) -> EmbeddedNats:
        """The node whose server leads `stream`'s raft group."""
        nc = await bus.connect(self.info["nats_url"], "faults-leader")
        try:
            info = await nc.jetstream().stream_info(stream)
        finally:
            await nc.close()
        assert info.cluster is not None and info.cluster.leader, info
        by_name = {n.route.server_name: n for n in self.nats.nodes if n.route is not None}
        return by_name[info.cluster.leader]

    async def conversation_partitions(self) -> list[int]:
        """How many of the conversations projection's partitions each messaging copy holds."""
        engine = create_engine(self.postgres.url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return await partition_holders(conn, ConversationsProjection())
        finally:
            await engine.dispose()

    async def kill_service(self, name: str, timeout: float = 60) -> float:
        """kill -9 one service copy; the seconds until `confab up` has restarted it."""
        pid = self.stack.pids()[name]
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        while self.stack.pids()[name] == pid:
            assert time.monotonic() - killed < timeout, f"{name} was not restarted"
            await asyncio.sleep(0.1)
        return time.monotonic() - killed


@pytest.fixture(scope="package")  # stopped before the tests after these run
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        find_haproxy()
    except BackendError as exc:
        pytest.skip(str(exc))
    with temp_data_dir("confab-faults-") as data_dir:
        # As under `confab up --cluster`: NATS requires a user, routes a password, and
        # each service gets its own user from the credentials file.
        credentials = data_dir / "nats-credentials.json"
        nats = EmbeddedNatsCluster(data_dir, credentials=Credentials.load_or_create(credentials))
        postgres = EmbeddedPostgres(data_dir, port=free_port())
        s3 = EmbeddedS3(data_dir, port=free_port())
        backends = (nats, postgres, s3)
        try:
            with ThreadPoolExecutor(max_workers=3) as pool:
                futures = [pool.submit(b.start) for b in backends]
            errors = [str(f.exception()) for f in futures if f.exception() is not None]
            if errors:
                pytest.fail("\n".join(errors), pytrace=False)
            assert s3.config is not None
            flags = [
                "--cluster",
                "--no-demo",
                f"--nats-url={nats.url}",
                f"--nats-credentials={credentials}",
                f"--database-url={postgres.url}",
                f"--s3-endpoint={s3.config.endpoint}",
                f"--s3-access-key={s3.config.access_key}",
                f"--s3-secret-key={s3.config.secret_key}",
            ]
            up_dir = tmp_path_factory.mktemp("cluster")
            with running_stack(up_dir, *flags, timeout=180) as stack:
                yield Cluster(stack, nats, postgres, s3)
        finally:
            with ThreadPoolExecutor(max_workers=3) as pool:
                for b in backends:
                    pool.submit(b.stop)


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[[Figures], None]:
    """Keep a fault's figures in pytest's cache (``.pytest_cache/v/confab/faults``) and
    print them (``-s``): docs/reliability.md is filled from them."""

    def save(figures: Figures) -> None:
        row = asdict(figures)
        request.config.cache.set(f"confab/faults/{request.node.name}", row)
        print(f"\nFAULT FIGURES {json.dumps(row)}")

    return save
