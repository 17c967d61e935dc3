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
    "print(priority.autogroup_nice()); "
    "print(*asyncio.run(priority.lower({nice}))); "
    "print(os.nice(0), priority.autogroup_nice())"
)


def _lower_in_child(
    nice: int, *, own_session: bool, start: int = 0
) -> tuple[list[str], list[str], list[str]]:
    """What the child's autogroup read before, what ``lower`` returned, what it saw after."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(nice=nice)],
        capture_output=True,
        text=True,
        start_new_session=own_session,
        preexec_fn=(lambda: os.nice(start)) if start else None,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    before, returned, seen = (line.split() for line in done.stdout.splitlines())
    return before, returned, seen


def test_a_session_leader_lowers_its_own_priority_and_its_autogroups() -> None:
    before, returned, seen = _lower_in_child(7, own_session=True)
    assert returned[0] == seen[0] == "7"
    # Whether the child has an autogroup of its own is the kernel's to say, not this
    # test run's: a run started in init's session reads no autogroup for itself.
    if before == ["None"]:
        assert returned[1] == seen[1] == "None"  # a kernel without autogroups
    else:
        assert before == ["0"]  # a new session's autogroup starts at 0
        assert returned[1] == seen[1] == "7"


def test_a_process_in_someone_elses_session_leaves_the_sessions_priority_alone() -> None:
    before = autogroup_nice()
    _, returned, seen = _lower_in_child(5, own_session=False)
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
    _, returned, seen = _lower_in_child(3, own_session=False, start=8)
    assert returned[0] == seen[0] == "8"
