"""A background service's lower CPU priority, made to count on Linux with autogroups.

Services whose work may wait (webhooks, notifications) lower their scheduling priority,
so that under load the real-time path gets the CPU first. ``os.nice`` alone does not do
that where the kernel groups processes by session (``CONFIG_SCHED_AUTOGROUP``, on by
default in most distributions, ``/proc/sys/kernel/sched_autogroup_enabled``): the
scheduler then shares the CPU fairly between *sessions*, and a process's own nice value
only orders it against the other processes of its session. ``confab up`` starts each
service as a session of its own, so a niced service still took a full share beside the
gateway and messaging.

Autogroups apply only to processes in the root CPU cgroup. A container (Docker,
Kubernetes) or a systemd unit with CPU accounting is a cgroup of its own: there the CPU
is shared between cgroups by their weights, and neither value below counts outside the
service's own cgroup. The deployment gives such a service its lower weight instead
(``cpu_shares``, a smaller CPU request, ``CPUWeight=``: ``deploy/README.md``).

``lower`` therefore sets both: the process's nice value, and its session's autogroup nice
value (``/proc/self/autogroup``), which orders the session against the others. The
second only when the process leads its session: the autogroup is then its own (and its
children's), never a terminal's shell and whatever else runs in it.

The kernel lets any process raise an autogroup's nice value (lower its priority), but
at most one such change per 100 ms across the whole machine without ``CAP_SYS_ADMIN``
(``EAGAIN``), so a few services starting together take turns.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

from confab.logging import get_logger

log = get_logger("confab.priority")

AUTOGROUP = Path("/proc/self/autogroup")
_TURNS = 20  # tries of the autogroup's rate limit (100 ms machine-wide)
_TURN_SECONDS = 0.11


def autogroup_nice(path: Path = AUTOGROUP) -> int | None:
    """The nice value of this process's autogroup; None without autogroups."""
    try:
        text = path.read_text()  # "/autogroup-1235 nice 0"
    except OSError:
        return None
    parts = text.split()
    return int(parts[-1]) if len(parts) == 3 and parts[1] == "nice" else None


async def lower(nice: int, path: Path = AUTOGROUP) -> tuple[int, int | None]:
    """Lower this process's priority to ``nice`` (never raise it), and its autogroup's
    when it leads its session. Returns the two nice values now in force (the autogroup's
    None where there is none or it is not this process's own)."""
    own = os.nice(0)
    if nice > own:
        own = os.nice(nice - own)
    group = autogroup_nice(path)
    if group is None or os.getsid(0) != os.getpid():
        return own, None
    for _ in range(_TURNS):
        if group >= nice:
            break
        try:
            if not _set_autogroup(path, nice):
                await asyncio.sleep(_TURN_SECONDS)  # another process's change: its turn first
        except OSError as exc:
            log.warning("autogroup_nice_not_set", nice=nice, error=str(exc))
            break
        group = autogroup_nice(path)
    return own, group


def _set_autogroup(path: Path, nice: int) -> bool:
    """Write the autogroup's nice value; False if the kernel's rate limit said not yet.
    (A write to ``/proc`` does not block.)"""
    try:
        path.write_text(str(nice))
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            return False
        raise
    return True
