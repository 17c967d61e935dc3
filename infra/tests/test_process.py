"""Children die with their parent, held ports stay ours, and a data directory has one
`confab up` at a time (``confab_infra.process``, ``confab_infra.ports``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from confab_infra.backends import BackendError, free_port, release, reserve
from confab_infra.process import DataDirLease, OutputLines, StackInUse
from confab_infra.testing import temp_data_dir


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with temp_data_dir("confab-process-test-") as path:
        yield path


def running(pid: int) -> bool:
    """Still running (an init that reaps lazily may show a dead child as a zombie)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def python(script: str) -> tuple[subprocess.Popen[str], OutputLines]:
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, OutputLines(process)


def line_after(lines: OutputLines, prefix: str) -> str:
    assert lines.wait_for(prefix, 30), "\n".join(lines.seen)
    return lines.seen[-1].removeprefix(prefix)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_started_from_a_finished_thread_lives_until_its_parent_is_killed() -> None:
    # The thread that asks for the child ends at once: with a plain PR_SET_PDEATHSIG in
    # its fork, the kernel would kill the child right then.
    parent, lines = python(
        """
        import threading, time
        from confab_infra.process import spawn
        children = []
        worker = threading.Thread(target=lambda: children.append(spawn(["sleep", "120"])))
        worker.start()
        worker.join()
        print("child", children[0].pid, flush=True)
        time.sleep(120)
        """
    )
    try:
        child = int(line_after(lines, "child "))
        assert not wait_until(lambda: not running(child), 0.5), "died with the thread"
        assert psutil.Process(child).ppid() == parent.pid
        parent.kill()
        assert wait_until(lambda: not running(child), 5), "outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def test_a_held_port_is_never_handed_out_and_its_server_can_listen() -> None:
    port = free_port()
    others: list[socket.socket] = []
    try:
        for _ in range(300):  # what any other program asking the kernel for a port gets
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            others.append(sock)
            assert sock.getsockname()[1] != port
        assert port not in {free_port() for _ in range(50)}
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port))
            server.listen()
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
    finally:
        for sock in others:
            sock.close()
        release(port)
    with socket.socket() as anyone:
        anyone.bind(("127.0.0.1", port))  # given back


def test_reserving_a_port_someone_listens_on_names_them() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BackendError) as error:
            reserve("gateway", "127.0.0.1", port)
    message = str(error.value)
    assert message.startswith(f"gateway: port {port} on 127.0.0.1 is already in use by pid ")
    assert str(os.getpid()) in message and "\n" not in message


def test_a_second_holder_is_told_who_runs_there_and_a_dead_ones_leftovers_are_stopped(
    data_dir: Path,
) -> None:
    # The holder records a child that does not die with it (as where there is no
    # PR_SET_PDEATHSIG), then is killed with -9.
    holder, lines = python(
        f"""
        import subprocess, time
        from pathlib import Path
        from confab_infra.process import DataDirLease
        lease = DataDirLease(Path({str(data_dir)!r}))
        lease.acquire(gateway="http://127.0.0.1:1234", fanout="ws://127.0.0.1:5678")
        child = subprocess.Popen(["sleep", "120"], start_new_session=True)
        lease.child_started("gateway", child.pid)
        print("child", child.pid, flush=True)
        time.sleep(120)
        """
    )
    try:
        child = int(line_after(lines, "child "))
        with pytest.raises(StackInUse) as error:
            DataDirLease(data_dir).acquire()
        message = str(error.value)
        assert f"confab up pid {holder.pid} " in message
        assert "http://127.0.0.1:1234" in message and "ws://127.0.0.1:5678" in message
        assert f"service pids {child}" in message and f"`kill {holder.pid}`" in message
        assert "\n" not in message

        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert running(child)
        successor = DataDirLease(data_dir)
        successor.acquire()  # takes over: the leftover is stopped first
        assert not running(child)
        successor.release()
        assert not (data_dir / "up.json").exists()
        again = DataDirLease(data_dir)
        again.acquire()  # free again
        again.release()
    finally:
        holder.kill()
        holder.wait()
