"""What a projection is: a read model fed by one stream, split into partitions.

Every event belongs to the partition its key hashes to (for conversations, the
conversation), so the events of one key are applied by one process at a time, in
stream order. Each partition has its own checkpoint row (``name#k/P``) beside the
projection's own row (``name``), which says "everything up to here is applied".
A projection of one partition has only the projection's row.

The other parts of ``confab.projection`` build on this one: ``ownership`` (which
process applies which partitions), ``checkpoints`` (every process learning the
projection's checkpoint), ``commit`` (a batch and its checkpoint rows in one
transaction), ``consumer`` (the JetStream side) and ``runner`` (the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from confab.db import checkpoint_table
from confab.events import Envelope

# What may fail while the database is away.
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, sa.exc.DBAPIError)


class Projection(ABC):
    """A read model fed by one stream. Subclasses declare tables on ``metadata``."""

    name: str  # unique across the platform, e.g. "identity"
    stream: str
    subjects: Sequence[str]
    metadata: sa.MetaData
    # How many ways the work can be split across processes. Events with one
    # ``partition_key`` are always applied in order by one process. Changing it
    # takes every copy down at once (or a rebuild): the partitions start again
    # from the projection's checkpoint, so ``apply`` must then tolerate events
    # after it a second time.
    partitions: int = 1

    def __init__(self) -> None:
        self.checkpoints = checkpoint_table(self.metadata)

    @abstractmethod
    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        """Apply ``events`` (in stream order, none applied before) inside ``conn``'s transaction."""

    def committed(self) -> None:
        """The transaction of the last ``apply`` committed: act on what it wrote (hand the
        rows to a sender, say). Nothing must act on a batch before this, since the
        transaction can still roll back and the batch be applied again."""
        return None

    def rolled_back(self) -> None:
        """The transaction of the last ``apply`` did not commit: the batch will be applied
        again, so forget what that ``apply`` started outside the transaction."""
        return None

    def partition_key(self, subject: str) -> str:
        """What orders events: those with one key go to one partition (the subject here)."""
        return subject

    def partition_of(self, subject: str) -> int:
        if self.partitions == 1:
            return 0
        return zlib.crc32(self.partition_key(subject).encode()) % self.partitions

    def checkpoint_names(self) -> list[str]:
        """The checkpoint row of each partition."""
        return partition_rows(self.name, self.partitions)


def partition_rows(name: str, partitions: int) -> list[str]:
    if partitions == 1:
        return [name]
    return [f"{name}#{k}/{partitions}" for k in range(partitions)]


def lock_key(name: str) -> int:
    """A PostgreSQL advisory lock key (one bigint) for ``name``, the same in every process."""
    digest = hashlib.blake2b(f"confab.projection.{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stopping`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
