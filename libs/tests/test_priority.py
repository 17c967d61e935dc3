"""A background service's lowered priority holds against other sessions: where the kernel
groups processes by session (autogroups), its session's nice value is lowered too, and
only when the session is the service's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from confab.priority import autogroup_nice

SCRIPT = (
    "import asyncio, os; from confab import priority; "
    "print(*asyncio.run(priority.lower({nice}))); "
    "print(os.nice(0), priority.autogroup_nice())"
)


def _lower_in_child(nice: int, *, own_session: bool, start: int = 0) -> list[list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(nice=nice)],
        capture_output=True,
        text=True,
        start_new_session=own_session,
        preexec_fn=(lambda: os.nice(start)) if start else None,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines()]


def test_a_session_leader_lowers_its_own_priority_and_its_autogroups() -> None:
    returned, seen = _lower_in_child(7, own_session=True)
    assert returned[0] == seen[0] == "7"
    if autogroup_nice() is None:
        assert returned[1] == seen[1] == "None"  # no autogroups on this kernel
    else:
        assert returned[1] == seen[1] == "7"


def test_a_process_in_someone_elses_session_leaves_the_sessions_priority_alone() -> None:
    before = autogroup_nice()
    returned, seen = _lower_in_child(5, own_session=False)
    assert returned == ["5", "None"]
    assert seen[0] == "5"
    assert autogroup_nice() == before  # this test's session: untouched
    assert seen[1] == str(before)


def test_the_autogroup_line_is_read_and_anything_else_is_none(tmp_path: Path) -> None:
    line = tmp_path / "autogroup"
    line.write_text("/autogroup-1235 nice 10\n")
    assert autogroup_nice(line) == 10
    line.write_text("something else\n")
    assert autogroup_nice(line) is None
    assert autogroup_nice(tmp_path / "missing") is None


def test_a_priority_already_lower_is_kept() -> None:
    returned, seen = _lower_in_child(3, own_session=False, start=8)
    assert returned[0] == seen[0] == "8"
