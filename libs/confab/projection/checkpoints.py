"""Checkpoint notifications: every process learns the projection's checkpoint.

A commit that moves the projection's own row sends ``name:seq`` on
``NOTIFY_CHANNEL`` in its transaction; every process of the projection listens,
so ``wait_for`` works wherever a query lands, whether or not that process
applied the events. The listening connection is made again after a database
restart, and the checkpoint re-read then (through a ``CheckpointReader``),
since notifications sent meanwhile are lost.

Invariants: ``checkpoint`` only moves forward; every waiter whose sequence it
reaches is woken.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import asyncpg

from confab.db import plain_url
from confab.logging import get_logger
from confab.projection.base import DATABASE_ERRORS, pause

log = get_logger("confab.projection")

NOTIFY_CHANNEL = "confab_checkpoints"


def notification(name: str, seq: int) -> str:
    """The payload that says projection ``name`` is at ``seq``."""
    return f"{name}:{seq}"


class CheckpointReader(Protocol):
    async def read_checkpoint(self) -> int:
        """The projection's checkpoint as the database has it now."""
        ...


class CheckpointWatch:
    """The projection's checkpoint as this process last heard of it, and waits on it."""

    def __init__(self, database_url: str, name: str, reader: CheckpointReader) -> None:
        self.database_url = database_url
        self.name = name
        self.reader = reader
        self.checkpoint = 0  # every partition is at least here
        self.listener: asyncpg.Connection | None = None
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._listening: asyncio.Task[None] | None = None

    async def start(self, checkpoint: int) -> None:
        """Start at ``checkpoint`` and listen for every later one."""
        await self.advance(checkpoint)
        self.listener = await self._listen()
        self._listening = asyncio.create_task(
            self._keep_listening(), name=f"projection-listen:{self.name}"
        )

    async def stop(self) -> None:
        self._stopping.set()
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listening
        if self.listener is not None:
            with contextlib.suppress(Exception):
                await self.listener.close()

    async def wait_for(self, seq: int, timeout: float = 2.0) -> bool:
        """Return True as soon as the checkpoint reaches ``seq``; False after ``timeout``."""
        if self.checkpoint >= seq:
            return True
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.checkpoint >= seq), timeout
                )
            except TimeoutError:
                return False
        return True

    async def advance(self, seq: int) -> None:
        """The checkpoint is at least ``seq`` now: wake whoever waits for it."""
        if seq > self.checkpoint:
            self.checkpoint = seq
            async with self._changed:
                self._changed.notify_all()

    async def _listen(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(plain_url(self.database_url))
        await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        return conn

    async def _keep_listening(self) -> None:
        """Listen again whenever the listening connection is lost (a database restart);
        without this a standby's ``wait_for`` would never see another checkpoint."""
        while not self._stopping.is_set():
            if self.listener is not None and not self.listener.is_closed():
                await pause(self._stopping, 1.0)
                continue
            try:
                listener = await self._listen()
                try:  # what was missed meanwhile
                    await self.advance(await self.reader.read_checkpoint())
                except BaseException:
                    await listener.close()
                    raise
                self.listener = listener
                log.info("projection_listening_again", projection=self.name)
            except DATABASE_ERRORS as exc:
                log.warning("projection_listen_retry", projection=self.name,
                            error=str(exc) or type(exc).__name__)  # fmt: skip
                await pause(self._stopping, 1.0)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        name, _, seq = payload.rpartition(":")
        if name == self.name:
            asyncio.get_running_loop().create_task(self.advance(int(seq)))
