"""The stack a benchmark runs against: started here with ``confab up``, or already running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

BACKEND_NAMES = {"nats-server": "nats", "postgres": "postgres", "weed": "s3"}


@contextmanager
def local_stack(target: Path | None = None) -> Iterator[dict[str, Any]]:
    """Yield stack.json (with backend pids added): of ``target``, or of a fresh ``confab up``."""
    if target is not None:
        info = json.loads(target.read_text())
        yield info
        return
    data_dir = Path(tempfile.mkdtemp(prefix="confab-bench-"))
    confab = str(Path(sys.executable).with_name("confab"))
    from confab_infra.backends import free_port

    ports = ["--gateway-port", str(free_port()), "--fanout-port", str(free_port())]
    process = subprocess.Popen(
        [confab, "up", "--data-dir", str(data_dir), *ports],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CONFAB_LOG_LEVEL": "warning"},
    )
    try:
        assert process.stdout is not None
        started = time.perf_counter()
        for line in process.stdout:
            if line.strip() == "confab: ready":
                break
        else:
            raise RuntimeError(f"confab up exited with {process.wait()}")
        info = json.loads((data_dir / "stack.json").read_text())
        info["cold_start_seconds"] = round(time.perf_counter() - started, 2)
        info["pids"] = {**info["pids"], **_backend_pids(process.pid)}
        yield info
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


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
