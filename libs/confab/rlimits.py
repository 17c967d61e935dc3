"""The open-files limit: every socket is a file, and distributions start processes
with a soft limit (often 1,024) far below what a fanout node or a load test needs."""

from __future__ import annotations

import contextlib
import resource


def raise_open_files(needed: int | None = None) -> int:
    """Raise this process's open-files limit to at least ``needed`` (its children inherit
    it), or as far as allowed without ``needed``: the soft limit up to the hard one, and
    the hard one too where allowed (root). Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if needed is None:
        needed = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target
