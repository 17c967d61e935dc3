"""Running ``confab up`` as a real process for end-to-end tests."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confab.bench.stack import CONFAB, READY, launch, stop, up_command
from confab_infra.backends import free_port
from confab_infra.testing import TestBackends

__all__ = ["CONFAB", "RunningStack", "backend_flags", "running_stack", "up_command"]


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    data_dir: Path
    info: dict[str, Any]
    lines: list[str] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        return str(self.info["gateway_url"])

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.info['admin_token']}"}

    def pids(self) -> dict[str, int]:
        return dict(json.loads((self.data_dir / "stack.json").read_text())["pids"])

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in (self.data_dir / "logs").glob("*"))


def backend_flags(backends: TestBackends, database_url: str) -> list[str]:
    s3 = backends.s3
    # "--flag=value": a generated secret may start with "-".
    return [
        f"--database-url={database_url}",
        f"--s3-endpoint={s3.endpoint}",
        f"--s3-access-key={s3.access_key}",
        f"--s3-secret-key={s3.secret_key}",
        f"--s3-bucket=t{uuid.uuid4().hex[:12]}",
    ]


@contextmanager
def running_stack(
    data_dir: Path, *flags: str, timeout: float = 120.0, env: dict[str, str] | None = None
) -> Iterator[RunningStack]:
    """``confab up`` with free ports (and its own embedded NATS unless a URL is given);
    stopped as Ctrl-C stops it when the block ends. Webhook retries come a second apart,
    so a test of a receiver that is down waits for the receiver, not for the production
    back-off. ``env`` adds to the stack's environment (a mail server of the test's)."""
    process, lines = launch(
        data_dir,
        free_port(),
        *flags,
        log_level="info",
        env={
            "CONFAB_WEBHOOKS_RETRY_SCHEDULE": "0.2,0.5,1*120",
            # Test only: link previews fetch pages the tests serve on loopback, and
            # nothing else (no private, metadata or public address: tests stay local).
            "CONFAB_MEDIA_LINK_PREVIEW_LOOPBACK_ONLY": "1",
            **(env or {}),
        },
    )
    try:
        if not lines.wait_for(READY, timeout):
            raise AssertionError("confab up did not become ready:\n" + "\n".join(lines.seen))
        info = json.loads((data_dir / "stack.json").read_text())
        yield RunningStack(process, data_dir, info, lines.seen)
    finally:
        stop(process)
