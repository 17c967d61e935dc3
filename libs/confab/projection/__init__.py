"""Projections: events from JetStream into PostgreSQL read models, split across processes.

The parts, each with its design note and invariants:

- ``base``: what a projection is (its partitions and their checkpoint rows);
- ``ownership``: which live process applies which partitions (advisory locks);
- ``checkpoints``: every process learning the projection's checkpoint (LISTEN/NOTIFY);
- ``commit``: a batch and its checkpoint rows in one transaction (and the swap lock);
- ``consumer``: the JetStream consumer, made afresh where the database says;
- ``runner``: the loop that joins them.

Import from here: the names below are the package's interface.
"""

from confab.projection.base import Projection, partition_rows
from confab.projection.base import lock_key as _lock_key
from confab.projection.checkpoints import NOTIFY_CHANNEL, CheckpointReader, CheckpointWatch
from confab.projection.commit import BatchCommit, CheckpointMoved, swap_lock_key
from confab.projection.consumer import consumer_name, open_message
from confab.projection.ownership import (
    BALANCE_INTERVAL,
    Ownership,
    partition_holders,
    partition_lock_class,
)
from confab.projection.runner import ProjectionRunner

__all__ = [
    "BALANCE_INTERVAL",
    "NOTIFY_CHANNEL",
    "BatchCommit",
    "CheckpointMoved",
    "CheckpointReader",
    "CheckpointWatch",
    "Ownership",
    "Projection",
    "ProjectionRunner",
    "_lock_key",
    "consumer_name",
    "open_message",
    "partition_holders",
    "partition_lock_class",
    "partition_rows",
    "swap_lock_key",
]
