"""Real backends for the test suite, chosen by `CONFAB_TEST_BACKENDS`.

- `embedded` (default): NATS, PostgreSQL and SeaweedFS started once per session on
  free ports in a temporary directory, concurrently, and stopped at the end;
- `containers`: testcontainers (needs a Docker engine; otherwise the tests are skipped);
- `external`: URLs from `CONFAB_TEST_*` variables.

The root `conftest.py` turns these into the `backends` and `fresh_database_url` fixtures.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from confab_infra.nats import EmbeddedNats
from confab_infra.nats_auth import Credentials
from confab_infra.ports import BackendError, check_url
from confab_infra.postgres import EmbeddedPostgres
from confab_infra.s3 import EmbeddedS3, S3Config, ensure_bucket

__all__ = [
    "MODES",
    "BackendsUnavailable",
    "TestBackends",
    "backends_mode",
    "container_backends",
    "embedded_backends",
    "external_backends",
    "fresh_database",
    "open_backends",
    "temp_data_dir",
]

MODES = ("embedded", "containers", "external")
T = TypeVar("T")


@dataclass(frozen=True)
class TestBackends:
    """Where the session's backends answer."""

    __test__ = False  # not a test class, despite its name

    nats_url: str  # as `admin` (every permission), if the server asks for credentials
    database_url: str
    s3: S3Config
    # Every NATS user's password, where we started the server (tests of the permissions).
    nats_credentials: Credentials | None = None


class BackendsUnavailable(Exception):
    """This kind of backend cannot run on this machine: skip, do not fail."""


def backends_mode(env: Mapping[str, str] = os.environ) -> str:
    mode = env.get("CONFAB_TEST_BACKENDS", "").strip().lower() or "embedded"
    if mode not in MODES:
        raise BackendError(f"CONFAB_TEST_BACKENDS={mode!r} is not one of {', '.join(MODES)}")
    return mode


@contextmanager
def open_backends(env: Mapping[str, str] = os.environ) -> Iterator[TestBackends]:
    """The backends `CONFAB_TEST_BACKENDS` asks for, released on exit."""
    mode = backends_mode(env)
    if mode == "external":
        yield external_backends(env)
    elif mode == "containers":
        with container_backends() as found:
            yield found
    else:
        with temp_data_dir("confab-test-") as data_dir, embedded_backends(data_dir) as found:
            yield found


@contextmanager
def temp_data_dir(prefix: str = "confab-test-") -> Iterator[Path]:
    """A fresh directory directly under the system temp dir, removed on exit.

    Not pytest's `tmp_path`: that lives under a 0700 directory which pytest re-locks at
    each session, and PostgreSQL runs as another user when we are root.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def embedded_backends(data_dir: Path) -> Iterator[TestBackends]:
    """Start the three embedded backends concurrently; stop them all on exit. NATS
    requires credentials, as under `confab up`; tests connect as `admin`."""
    credentials = Credentials.load_or_create(data_dir / "nats-credentials.json")
    nats = EmbeddedNats(data_dir, credentials=credentials)
    postgres, s3 = EmbeddedPostgres(data_dir), EmbeddedS3(data_dir)
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [pool.submit(backend.start) for backend in (nats, postgres, s3)]
            errors = [str(f.exception()) for f in futures if f.exception() is not None]
        if errors:
            raise BackendError("\n".join(errors))
        nats_url, database_url, s3_config = (f.result() for f in futures)
        yield TestBackends(credentials.url(nats_url), database_url, s3_config, credentials)
    finally:
        with ThreadPoolExecutor(max_workers=3) as pool:
            for backend in (nats, postgres, s3):
                pool.submit(backend.stop)


def external_backends(env: Mapping[str, str] = os.environ) -> TestBackends:
    """Backends given by `CONFAB_TEST_*` variables; the bucket is created if missing."""
    required = ["NATS_URL", "DATABASE_URL", "S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY"]
    missing = [f"CONFAB_TEST_{name}" for name in required if not env.get(f"CONFAB_TEST_{name}")]
    if missing:
        raise BackendError(
            f"CONFAB_TEST_BACKENDS=external needs {', '.join(missing)} (not set or empty)"
        )
    found = TestBackends(
        nats_url=env["CONFAB_TEST_NATS_URL"],
        database_url=env["CONFAB_TEST_DATABASE_URL"],
        s3=S3Config(
            endpoint=env["CONFAB_TEST_S3_ENDPOINT"],
            access_key=env["CONFAB_TEST_S3_ACCESS_KEY"],
            secret_key=env["CONFAB_TEST_S3_SECRET_KEY"],
            bucket=env.get("CONFAB_TEST_S3_BUCKET") or "confab",
            region=env.get("CONFAB_TEST_S3_REGION") or "us-east-1",
        ),
    )
    check_url("CONFAB_TEST_NATS_URL", found.nats_url, ("nats", "tls"))
    check_url("CONFAB_TEST_DATABASE_URL", found.database_url, ("postgresql", "postgres"))
    check_url("CONFAB_TEST_S3_ENDPOINT", found.s3.endpoint, ("http", "https"))
    try:
        ensure_bucket(found.s3)
    except Exception as exc:
        raise BackendError(f"S3 at {found.s3.endpoint}: {exc}") from None
    return found


@contextmanager
def container_backends() -> Iterator[TestBackends]:
    """NATS, PostgreSQL and MinIO in containers; `BackendsUnavailable` without Docker."""
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        raise BackendsUnavailable(
            f"CONFAB_TEST_BACKENDS=containers needs a Docker engine, and none answers: {exc}"
        ) from None
    from testcontainers.community.minio import MinioContainer
    from testcontainers.community.nats import NatsContainer
    from testcontainers.community.postgres import PostgresContainer

    access_key, secret_key = "confab", secrets.token_urlsafe(24)
    nats = NatsContainer("nats:2.11", jetstream=True)
    postgres = PostgresContainer(
        "postgres:17", username="confab", password="confab", dbname="confab", driver=None
    )
    minio = MinioContainer("minio/minio", access_key=access_key, secret_key=secret_key)
    minio.with_env("MINIO_ROOT_USER", access_key).with_env("MINIO_ROOT_PASSWORD", secret_key)
    with ExitStack() as stack:
        try:
            for container in (nats, postgres, minio):
                stack.enter_context(container)
            s3 = S3Config(f"http://{minio.get_config()['endpoint']}", access_key, secret_key)
            ensure_bucket(s3)
        except Exception as exc:
            raise BackendError(f"containers: {type(exc).__name__}: {exc}") from None
        yield TestBackends(nats.nats_uri(), postgres.get_connection_url(), s3)


@contextmanager
def fresh_database(database_url: str) -> Iterator[str]:
    """A new, empty database on the server of `database_url`, dropped on exit; its URL.

    The role in `database_url` needs CREATEDB (the embedded `confab` role has it).
    """
    name = f"test_{secrets.token_hex(6)}"
    _run(_execute(database_url, f'CREATE DATABASE "{name}"'))
    try:
        yield urlsplit(database_url)._replace(path=f"/{name}").geturl()
    finally:
        # FORCE: a test that leaked a connection pool must not keep its database alive.
        _run(_drop(database_url, name))


async def _drop(database_url: str, name: str, attempts: int = 40) -> None:
    """Drop the database. FORCE cannot end the server's own autovacuum worker (a test
    that wrote much can start one): that one ends by itself soon, so try again."""
    import asyncpg

    for attempt in range(attempts):
        try:
            await _execute(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except asyncpg.InsufficientPrivilegeError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.25)


async def _execute(database_url: str, sql: str) -> None:
    import asyncpg

    scheme, sep, rest = database_url.partition("://")
    connection = await asyncpg.connect(scheme.split("+")[0] + sep + rest)  # no "+asyncpg"
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on its own loop in its own thread: callable from sync fixtures
    without touching pytest-asyncio's session loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
