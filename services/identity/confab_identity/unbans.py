"""Timed bans lift themselves: the scheduled unban, through the log.

A ban given with a duration (``user.banned`` with ``until``) is lifted by
identity: every ``interval`` seconds each identity copy asks its read model for
timed bans whose end has passed and runs for each the scheduled unban
(``SetUserBan`` with ``if_until``) through its own command handler. So the lifting is a
``user.unbanned`` in the log, fenced like any unban (in force on every gateway,
messaging copy and fanout node before it is done), and it survives restarts:
nothing is kept in memory. Copies racing on one ban are harmless (the second
decides nothing), and ``if_until`` keeps a schedule from lifting a newer ban
given since. A ban lifts within about ``interval`` of its end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from confab.contracts.identity import SetUserBan
from confab.errors import ConfabError
from confab.logging import get_logger
from confab.rpc import CallContext
from confab_identity.store import TABLES

log = get_logger("confab_identity")

BATCH = 100


def utcnow() -> datetime:
    return datetime.now(UTC)


class Unbans:
    def __init__(
        self,
        engine: AsyncEngine,
        handle: Callable[[SetUserBan, CallContext], Awaitable[Any]],
        *,
        interval: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.handle = handle  # identity's own SetUserBan handler (fenced like any unban)
        self.interval = interval
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def due(self) -> list[tuple[str, str, datetime]]:
        """(workspace, user, until) of the timed bans that have ended."""
        u = TABLES.users
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(u.c.workspace_id, u.c.id, u.c.banned_until)
                .where(
                    u.c.banned_until.is_not(None),
                    u.c.banned_until <= self.clock(),
                    u.c.banned,
                    sa.not_(u.c.erased),
                )
                .order_by(u.c.banned_until)
                .limit(BATCH)
            )
            return [(r.workspace_id, r.id, r.banned_until) for r in rows]

    async def lift_due(self) -> int:
        lifted = 0
        for workspace_id, user_id, until in await self.due():
            unban = SetUserBan(
                workspace_id=workspace_id,
                user_id=user_id,
                banned=False,
                if_until=until,
                actor="schedule",
            )
            await self.handle(unban, CallContext())
            log.info("timed_ban_lifted", workspace_id=workspace_id, user_id=user_id)
            lifted += 1
        return lifted

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.lift_due()
            except (ConfabError, OSError, sa.exc.SQLAlchemyError) as exc:
                log.warning("timed_bans_not_lifted", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
