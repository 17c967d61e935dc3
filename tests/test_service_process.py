"""A service process on its own: settings checked at start-up, health and metrics over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from confab_infra.backends import free_port
from tests.stack import RunningStack

IDENTITY = str(Path(sys.executable).with_name("confab-identity"))


def test_a_bad_variable_stops_the_service_with_one_line_naming_it() -> None:
    env = {**os.environ, "CONFAB_STREAM_REPLICAS": "many"}
    result = subprocess.run([IDENTITY], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "confab-identity: CONFAB_STREAM_REPLICAS='many': Expected int, got str"
    ]


def test_unreachable_nats_is_one_line_not_a_traceback() -> None:
    env = {**os.environ, "CONFAB_NATS_URL": f"nats://127.0.0.1:{free_port()}"}
    # The service retries its dependencies for a while; cut that short for the test.
    result = subprocess.run(
        [IDENTITY],
        env={**env, "CONFAB_START_TIMEOUT": "2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot reach NATS" in result.stderr and "Traceback" not in result.stderr


def test_health_and_metrics_over_http(stack: RunningStack) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CONFAB_NATS_URL": stack.info["nats_url"],
        "CONFAB_DATABASE_URL": stack.info["database_url"],
        "CONFAB_HTTP_PORT": str(port),
        "CONFAB_INSTANCE": "identity-http-test",
    }
    process = subprocess.Popen(
        [IDENTITY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline and status != 200:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    status = r.status
            except OSError:
                time.sleep(0.2)
        assert status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert "confab_projection_checkpoint" in text
        assert 'confab_gc_pause_seconds_count{generation="2"}' in text
    finally:
        process.terminate()
        assert process.wait(30) == 0  # a graceful stop on SIGTERM
