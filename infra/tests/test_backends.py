"""The embedded backends, as real processes: they answer real clients, keep their state
across a restart, refuse wrong credentials and busy ports, and recover from kill -9."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import psutil
import pytest
from minio import Minio
from minio.error import S3Error

from confab_infra.backends import (
    BackendError,
    EmbeddedNats,
    EmbeddedPostgres,
    EmbeddedS3,
    S3Config,
    check_url,
    free_port,
    s3_client,
    wait_tcp,
)
from confab_infra.testing import TestBackends, temp_data_dir


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with temp_data_dir("confab-infra-test-") as path:
        yield path


def gone(process: psutil.Process) -> bool:
    """Exited (an init that reaps lazily may still show it as a zombie)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- NATS ------------------------------------------------------------------------------


async def test_nats_jetstream_answers_and_keeps_streams_across_restart(data_dir: Path) -> None:
    server = EmbeddedNats(data_dir)
    try:
        url = server.start()
        assert url.startswith("nats://127.0.0.1:")
        assert (data_dir / "nats" / "nats.log").exists()
        client = await nats.connect(url)
        js = client.jetstream()
        await js.add_stream(name="SMOKE", subjects=["smoke.>"])
        ack = await js.publish("smoke.one", b"hello")
        assert (ack.stream, ack.seq) == ("SMOKE", 1)
        assert (await js.stream_info("SMOKE")).state.messages == 1
        await client.close()

        server.stop()
        assert server.pid is None
        url = server.start()
        client = await nats.connect(url)
        js = client.jetstream()
        assert (await js.stream_info("SMOKE")).state.messages == 1
        assert (await js.get_msg("SMOKE", 1)).data == b"hello"
        await client.close()
    finally:
        server.stop()


def test_stop_kills_a_backend_that_ignores_sigterm_and_is_idempotent(data_dir: Path) -> None:
    server = EmbeddedNats(data_dir)
    server.start()
    process = psutil.Process(server.pid)
    os.kill(server.pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    started = time.monotonic()
    server.stop(timeout=0.5)
    assert time.monotonic() - started < 5
    assert gone(process)
    server.stop()
    assert server.process is None


def test_a_second_copy_on_the_same_data_dir_is_refused(data_dir: Path) -> None:
    first = EmbeddedNats(data_dir)
    first.start()
    try:
        with pytest.raises(BackendError, match="already running"):
            EmbeddedNats(data_dir).start()
        assert first.running()
    finally:
        first.stop()


def test_a_copy_left_by_a_killed_parent_is_stopped_by_the_next_start(data_dir: Path) -> None:
    # The parent starts NATS and dies without any clean-up, as with kill -9. On Linux the
    # kernel kills the child with it (test_process.py); without that (another system, a
    # copy started by an older version) the next start finds the copy by its pid file.
    script = f"""
        import os, sys
        from pathlib import Path
        from confab_infra import process
        from confab_infra.backends import EmbeddedNats
        process._prctl = None  # no PR_SET_PDEATHSIG: the copy outlives its parent
        server = EmbeddedNats(Path({str(data_dir)!r}))
        server.start()
        print(server.pid, flush=True)
        os._exit(0)
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    orphan = psutil.Process(int(out.stdout))
    assert orphan.is_running()
    server = EmbeddedNats(data_dir)
    try:
        server.start()
        assert gone(orphan)
        assert server.pid != orphan.pid
    finally:
        server.stop()


# -- PostgreSQL ------------------------------------------------------------------------


async def test_postgres_keeps_rows_across_restart_and_survives_kill_9(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    again = EmbeddedPostgres(data_dir)
    try:
        url = server.start()
        assert url.startswith("postgresql://confab:confab@127.0.0.1:")
        assert url.endswith("/confab")
        connection = await asyncpg.connect(url)
        assert await connection.fetchval("SELECT current_user") == "confab"
        await connection.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('row')")
        await connection.close()

        server.stop()
        url = server.start()
        connection = await asyncpg.connect(url)
        assert await connection.fetchval("SELECT v FROM kept") == "row"

        # kill -9 the postmaster while a client is connected: postmaster.pid stays behind.
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(10)
        assert (server.pgdata / "postmaster.pid").exists()
        connection.terminate()

        url = again.start()
        connection = await asyncpg.connect(url)
        assert await connection.fetchval("SELECT v FROM kept") == "row"
        await connection.close()
    finally:
        server.stop()
        again.stop()


def test_postgres_that_exits_during_start_reports_its_log(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    server.start()
    server.stop()
    (server.pgdata / "PG_VERSION").write_text("9\n")  # as if made by a PostgreSQL long gone
    with pytest.raises(BackendError) as error:
        server.start()
    message = str(error.value)
    assert message.startswith("PostgreSQL: exited with code 1 while starting; last lines of ")
    assert "FATAL:  database files are incompatible with server" in message
    assert server.process is None


# -- S3 ----------------------------------------------------------------------------


def test_s3_needs_its_credentials_and_keeps_objects_and_keys_across_restart(
    data_dir: Path,
) -> None:
    server = EmbeddedS3(data_dir)
    again = EmbeddedS3(data_dir)
    try:
        config = server.start()
        assert config.endpoint.startswith("http://127.0.0.1:")
        client = s3_client(config)
        assert client.bucket_exists("confab")
        client.put_object(config.bucket, "a/b.txt", io.BytesIO(b"hello"), 5)
        assert client.get_object(config.bucket, "a/b.txt").read() == b"hello"

        wrong = S3Config(config.endpoint, config.access_key, "not-the-secret-key")
        with pytest.raises(S3Error) as refused:
            s3_client(wrong, retries=False).get_object(config.bucket, "a/b.txt")
        assert refused.value.code == "SignatureDoesNotMatch"
        anonymous = Minio(config.endpoint.removeprefix("http://"), secure=False)
        with pytest.raises(S3Error) as refused:
            anonymous.get_object(config.bucket, "a/b.txt")
        assert refused.value.code == "AccessDenied"

        saved = json.loads((data_dir / "s3" / "credentials.json").read_text())
        assert saved == {"access_key": config.access_key, "secret_key": config.secret_key}
        assert (data_dir / "s3" / "credentials.json").stat().st_mode & 0o077 == 0

        server.stop()
        restarted = again.start()
        assert (restarted.access_key, restarted.secret_key) == (
            config.access_key,
            config.secret_key,
        )
        client = s3_client(restarted)
        assert client.get_object(config.bucket, "a/b.txt").read() == b"hello"
    finally:
        server.stop()
        again.stop()


# -- ports and URLs ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", [EmbeddedNats, EmbeddedPostgres, EmbeddedS3])
def test_a_busy_port_is_named_in_one_line(data_dir: Path, backend: type) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BackendError) as error:
            backend(data_dir, port=port).start()
    busy = f"{backend.name}: port {port} on 127.0.0.1 is already in use"
    assert str(error.value).startswith(busy)
    assert str(error.value).endswith(
        f" by pid {os.getpid()} ({' '.join(psutil.Process().cmdline())[:80]})"
    )


def test_free_ports_are_distinct_held_and_wait_tcp_sees_a_listener() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    port = ports.pop()
    assert not wait_tcp("127.0.0.1", port, 0.1)
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(("127.0.0.1", port))  # held for us: nobody else is given it
    with socket.socket() as listener:
        # Our servers set SO_REUSEADDR (aiohttp, nats-server, postgres, weed, haproxy).
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert wait_tcp("127.0.0.1", port, 1)


@pytest.mark.parametrize(
    "url", ["nats//bad", "nats:/bad", "nats://", "http://host:4222", "nats://host:port"]
)
def test_check_url_names_the_variable(url: str) -> None:
    with pytest.raises(BackendError) as error:
        check_url("CONFAB_NATS_URL", url, ("nats", "tls"))
    assert str(error.value).startswith(f"CONFAB_NATS_URL {url!r} is not a valid URL: ")


@pytest.mark.parametrize(
    ("url", "schemes"),
    [
        ("nats://127.0.0.1:4222", ("nats",)),
        ("nats://user:pw@a:4222,nats://b:4223", ("nats",)),
        ("postgresql://confab:confab@h1:5432,h2:5433/confab", ("postgresql",)),
        ("http://[::1]:9000", ("http", "https")),
    ],
)
def test_check_url_accepts_good_urls(url: str, schemes: tuple[str, ...]) -> None:
    check_url("X", url, schemes)


# -- the session fixture -------------------------------------------------------------------


async def test_session_backends_and_a_fresh_database(
    backends: TestBackends, fresh_database_url: str
) -> None:
    client = await nats.connect(backends.nats_url)
    assert (await client.jetstream().account_info()).streams >= 0
    await client.close()
    assert s3_client(backends.s3).bucket_exists(backends.s3.bucket)
    connection = await asyncpg.connect(fresh_database_url)
    try:
        assert await connection.fetchval("SELECT current_database()") != "confab"
        tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        assert await connection.fetchval(tables) == 0
    finally:
        await connection.close()
