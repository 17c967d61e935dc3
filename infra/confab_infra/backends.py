"""The embedded backends of one machine: NATS JetStream (one server or a cluster),
PostgreSQL and S3 (SeaweedFS), and HAProxy in front of several copies of a service.

Each runs as a child process with its state under one data directory, so `confab up`
and the test suite need nothing but the Python environment (HAProxy, used only by
`confab up --cluster`, comes from Debian's package).
"""

from confab_infra.balancer import Frontend, HAProxy
from confab_infra.nats import EmbeddedNats, EmbeddedNatsCluster
from confab_infra.ports import (
    BackendError,
    check_port_free,
    check_url,
    free_port,
    release,
    reserve,
    wait_tcp,
)
from confab_infra.postgres import EmbeddedPostgres
from confab_infra.s3 import EmbeddedS3, S3Config, ensure_bucket, s3_client

__all__ = [
    "BackendError",
    "EmbeddedNats",
    "EmbeddedNatsCluster",
    "EmbeddedPostgres",
    "EmbeddedS3",
    "Frontend",
    "HAProxy",
    "S3Config",
    "check_port_free",
    "check_url",
    "ensure_bucket",
    "free_port",
    "release",
    "reserve",
    "s3_client",
    "wait_tcp",
]
