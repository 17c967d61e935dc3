"""``confab up``: ready line, stack.json, health, restarts, restarts of the whole stack (after a
stop and after kill -9), one data dir per stack, errors; never on the default ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from confab.cli import up
from confab.priority import autogroup_nice
from confab_infra.backends import free_port
from tests.stack import RunningStack, running_stack, up_command

SERVICES = set(up.SERVICES)  # what confab up starts


def health(stack: RunningStack) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(stack.gateway + "/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


def running(process: psutil.Process) -> bool:
    """Still running (an init that reaps lazily may show a dead process as a zombie)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_ready_writes_stack_json_and_every_service_is_healthy(stack: RunningStack) -> None:
    assert "confab: ready" in stack.lines
    info = stack.info
    for key in (
        "gateway_url",
        "fanout_ws_url",
        "fanout_http_url",
        "nats_url",
        "database_url",
        "s3_endpoint",
        "admin_token",
        "demo",
        "pids",
    ):
        assert key in info, key
    assert set(info["pids"]) == SERVICES
    assert info["demo"]["api_key"].startswith("sk_")
    assert (stack.data_dir / "stack.json").stat().st_mode & 0o077 == 0  # holds secrets
    status, body = health(stack)
    assert status == 200, body
    assert {name for name, s in body["services"].items() if s["status"] == "ok"} == SERVICES


def test_the_background_services_run_at_a_lower_priority_and_so_do_their_sessions(
    stack: RunningStack,
) -> None:
    """Webhooks (to 19) and the notifier (to 10) lower their nice value and, each leading
    a session of its own, their autogroup's, without which the first would not count
    against the other services' sessions (``confab.priority``)."""
    pids = stack.pids()
    inherited = os.nice(0)  # the services start at this test's own nice value
    for name in SERVICES:
        pid = pids[name]
        lowered = {"webhooks": 19, "notifier": 10}.get(name, 0)
        own = max(lowered, inherited)
        assert psutil.Process(pid).nice() == own, name
        assert os.getsid(pid) == pid, name
        group = autogroup_nice(Path(f"/proc/{pid}/autogroup"))  # a new session's starts at 0
        assert group in (None, lowered), name  # None: no autogroups


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_a_killed_service_is_restarted_and_health_turns_green(
    stack: RunningStack, name: str
) -> None:
    old = stack.pids()[name]
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: stack.pids()[name] != old, timeout=5), f"{name} not restarted"
    assert wait_until(lambda: health(stack)[0] == 200, timeout=30), json.dumps(health(stack))


def test_state_survives_a_stop_and_a_kill_9_which_leaves_no_process_behind(
    tmp_path: Path,
) -> None:
    """Everything embedded, as `make run` does: stop, start again, the data is still there;
    kill -9 `confab up`, and every service and backend dies with it, and the next start on
    the same data dir takes over."""
    import asyncio

    from confab import bus

    async def stream_names(url: str) -> set[str]:
        nc = await bus.connect(url, "test")
        try:
            return {s.config.name for s in await nc.jetstream().streams_info()}
        finally:
            await nc.close()

    with running_stack(tmp_path) as first:
        demo = first.info["demo"]
        assert {"IDENTITY", "CONVERSATIONS", "MEDIA"} <= asyncio.run(
            stream_names(first.info["nats_url"])
        )
    assert first.process.returncode == 0
    with running_stack(tmp_path) as second:
        assert second.info["demo"] == demo  # created once, kept
        assert {"IDENTITY", "CONVERSATIONS", "MEDIA"} <= asyncio.run(
            stream_names(second.info["nats_url"])
        )
        request = urllib.request.Request(
            second.gateway + "/api/v1/users/usr_nobody", headers={"X-API-Key": demo["api_key"]}
        )
        # The key from the first run authenticates: workspaces survived in stream and tables.
        try:
            urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        # Every process of the stack: services, NATS, PostgreSQL (and its workers), S3.
        family = psutil.Process(second.process.pid).children(recursive=True)
        backends = second.info["backend_pids"]
        assert {"nats", "postgresql", "s3"} <= set(backends), backends
        assert set(second.pids().values()) | set(backends.values()) <= {p.pid for p in family}
        second.process.kill()
        second.process.wait()
        assert wait_until(lambda: not any(map(running, family)), timeout=10), [
            (p.pid, p.name()) for p in family if running(p)
        ]
    with running_stack(tmp_path) as third:
        assert third.info["demo"] == demo


def run_up(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(up_command(tmp_path, *flags), capture_output=True, text=True, timeout=60)


def free_ports() -> list[str]:
    """Never the default ports: `make run` may be serving on them beside the tests."""
    return ["--gateway-port", str(free_port()), "--fanout-port", str(free_port())]


def test_a_second_up_on_a_running_stacks_data_dir_says_what_runs_there(
    stack: RunningStack,
) -> None:
    result = run_up(stack.data_dir, *free_ports())
    assert result.returncode == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert f"is in use by confab up pid {stack.process.pid} " in line
    assert stack.gateway in line and stack.info["fanout_ws_url"] in line
    assert all(str(pid) in line for pid in stack.pids().values())
    assert f"`kill {stack.process.pid}`" in line
    assert stack.process.poll() is None and health(stack)[0] == 200  # left alone


def test_a_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_up(tmp_path, "--gateway-port", str(port), "--fanout-port", str(free_port()))
    assert result.returncode != 0
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    errors = [ln for ln in lines if str(port) in ln]
    assert errors and "in use" in errors[0]
    assert "Traceback" not in result.stderr


def test_a_bad_url_is_one_clear_line(tmp_path: Path) -> None:
    result = run_up(tmp_path, *free_ports(), "--nats-url", "nats//nowhere")
    assert result.returncode != 0
    assert "--nats-url" in result.stderr and "not a valid URL" in result.stderr
    assert "Traceback" not in result.stderr
