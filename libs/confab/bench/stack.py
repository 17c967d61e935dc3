"""The stack a benchmark runs against: started here with ``confab up``, or already running.

Starting and stopping ``confab up`` as a child process is defined here once; the
end-to-end tests (``tests/stack.py``) start and stop theirs with the same two functions.
``confab_infra`` (the embedded backends) is imported only when a stack is started here:
the ``confab`` command line is also in the service images, which do not carry it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from confab_infra.process import OutputLines

BACKEND_NAMES = {"nats-server": "nats", "postgres": "postgres", "weed": "s3"}
RECORDED_NAMES = {"postgresql": "postgres"}  # stack.json's ``backend_pids`` → the bench's
READY_TIMEOUT = 180.0
READY = "confab: ready"
CONFAB = str(Path(sys.executable).with_name("confab"))


def up_command(data_dir: Path, *extra: str) -> list[str]:
    return [CONFAB, "up", "--data-dir", str(data_dir), *extra]


def launch(
    data_dir: Path,
    gateway_port: int,
    *extra: str,
    log_level: str = "warning",
    env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[str], OutputLines]:
    """``confab up`` on ``data_dir`` with free ports, its output readable line by line;
    ``env`` adds to (and yields to) the caller's environment."""
    from confab_infra.backends import free_port
    from confab_infra.process import OutputLines

    ports = ["--gateway-port", str(gateway_port), "--fanout-port", str(free_port())]
    process = subprocess.Popen(
        up_command(data_dir, *ports, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**(env or {}), **os.environ, "CONFAB_LOG_LEVEL": log_level},
    )
    return process, OutputLines(process)


def stop(process: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    """Gracefully, as Ctrl-C does; killed only if it does not stop within ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stack_pids(data_dir: Path, process: subprocess.Popen[str]) -> dict[str, int]:
    """The services' pids from stack.json and the embedded backends' found among the children."""
    info = json.loads((data_dir / "stack.json").read_text())
    return {**info["pids"], **_backend_pids(process.pid)}


@contextmanager
def local_stack(target: Path | None = None) -> Iterator[dict[str, Any]]:
    """Yield stack.json (with backend pids added): of ``target``, or of a fresh ``confab up``."""
    if target is not None:
        info = json.loads(target.read_text())
        info["pids"] = target_pids(info)
        yield info
        return
    from confab_infra.backends import free_port

    data_dir = Path(tempfile.mkdtemp(prefix="confab-bench-"))
    started = time.perf_counter()
    process, lines = launch(data_dir, free_port())
    try:
        if not lines.wait_for(READY, READY_TIMEOUT):
            raise RuntimeError("confab up did not become ready:\n" + "\n".join(lines.seen[-20:]))
        info = json.loads((data_dir / "stack.json").read_text())
        info["cold_start_seconds"] = round(time.perf_counter() - started, 2)
        info["pids"] = stack_pids(data_dir, process)
        yield info
    finally:
        stop(process)
        shutil.rmtree(data_dir, ignore_errors=True)


def target_pids(info: dict[str, Any]) -> dict[str, int]:
    """A running stack's pids from its stack.json: the services', and the backends' that
    ``confab up`` recorded, named as the bench names them (so a run with ``--target``
    reports NATS's and PostgreSQL's CPU too)."""
    recorded = info.get("backend_pids", {})
    return {**info["pids"], **{RECORDED_NAMES.get(n, n): pid for n, pid in recorded.items()}}


def _backend_pids(parent: int) -> dict[str, int]:
    """The embedded servers are children of ``confab up``; the postmaster is the oldest postgres."""
    found: dict[str, int] = {}
    for child in psutil.Process(parent).children(recursive=True):
        try:
            name = BACKEND_NAMES.get(child.name())
        except psutil.Error:
            continue
        if name and name not in found:
            found[name] = child.pid
    return found
