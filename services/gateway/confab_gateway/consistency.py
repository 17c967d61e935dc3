"""Read-your-writes: queries wait until the read model has what the same caller wrote.

After a write, the gateway remembers the stream sequence it was stored at, per
caller (a widget user, or a tenant's backend); that caller's next query carries
it as ``min_seq`` and the service waits (bounded) for its projection.
"""

from __future__ import annotations

from collections import OrderedDict

from confab.contracts.messaging import Actor


class LastWrites:
    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._seqs: OrderedDict[tuple[str, str], int] = OrderedDict()

    @staticmethod
    def _key(actor: Actor) -> tuple[str, str]:
        return actor.workspace_id, actor.user_id or ""

    def wrote(self, actor: Actor, stream_seq: int) -> None:
        key = self._key(actor)
        if stream_seq > self._seqs.get(key, 0):
            self._seqs[key] = stream_seq
        self._seqs.move_to_end(key)
        while len(self._seqs) > self.max_entries:
            self._seqs.popitem(last=False)

    def min_seq(self, actor: Actor) -> int:
        return self._seqs.get(self._key(actor), 0)
