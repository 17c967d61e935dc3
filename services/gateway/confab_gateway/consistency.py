"""Read-your-writes: queries wait until the read model has what was written before them.

After a write, the gateway remembers the stream sequence it was stored at, per
workspace; every later query in that workspace carries it as ``min_seq`` and
the service waits (bounded, usually not at all) for its projection. So a
caller reads its own writes, and on one gateway nobody in the workspace reads
older state than something already acknowledged: unread counts move in step.
"""

from __future__ import annotations

from collections import OrderedDict

from confab.contracts.messaging import Actor


class LastWrites:
    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._seqs: OrderedDict[str, int] = OrderedDict()

    @staticmethod
    def _key(actor: Actor) -> str:
        return actor.workspace_id

    def wrote(self, actor: Actor, stream_seq: int) -> None:
        key = self._key(actor)
        if stream_seq > self._seqs.get(key, 0):
            self._seqs[key] = stream_seq
        if key not in self._seqs:
            return  # a write that stored nothing (0) in a workspace not written to yet
        self._seqs.move_to_end(key)
        while len(self._seqs) > self.max_entries:
            self._seqs.popitem(last=False)

    def min_seq(self, actor: Actor) -> int:
        return self._seqs.get(self._key(actor), 0)
