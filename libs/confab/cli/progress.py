"""Progress of a long replay on stderr: a bar on a terminal, plain lines otherwise.

Small enough to keep here rather than add a dependency (``rich`` is only a
development dependency of the test tools).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from confab.rebuild import Progress

BAR_WIDTH = 28


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class ProgressBar(Progress):
    def __init__(
        self,
        label: str,
        out: TextIO | None = None,
        *,
        tty: bool | None = None,
        interval: float | None = None,
        quiet: bool = False,
    ) -> None:
        super().__init__()
        self.label = label
        self.out = out or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.quiet = quiet
        self._shown = 0.0
        self._open_line = False

    def line(self) -> str:
        total = max(self.total, self.done)
        rate = self.rate
        left = total - self.done
        eta = _duration(left / rate) if rate > 0 and left > 0 else "-"
        fraction = self.done / total if total else 1.0
        counts = f"{self.done:,}/{total:,} events  {rate:,.0f}/s  ETA {eta}"
        if not self.tty:
            return f"{self.label}: {fraction:4.0%}  {counts}"
        filled = int(BAR_WIDTH * fraction)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return f"{self.label}  [{bar}] {fraction:4.0%}  {counts}"

    def changed(self) -> None:
        now = time.monotonic()
        if self.quiet or now - self._shown < self.interval:
            return
        self._shown = now
        self._show()

    def _show(self) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K" + self.line())
            self._open_line = True
        else:
            self.out.write(self.line() + "\n")
        self.out.flush()

    def finish(self) -> None:
        if self.quiet:
            return
        self._show()
        self._end_line()

    def _end_line(self) -> None:
        if self._open_line:
            self.out.write("\n")
            self.out.flush()
            self._open_line = False
