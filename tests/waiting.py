"""One way for tests to wait for the platform: poll a condition, with a deadline.

Never a sleep that stands for "long enough": ``until`` returns as soon as the check
holds, and fails naming what it waited for once the deadline has passed.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

WAIT = 45.0  # seconds: a bound on a hang, not a speed target


async def until(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``check`` (a function, or a coroutine function) until it gives something true,
    and return that; fail after ``timeout`` seconds, naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
