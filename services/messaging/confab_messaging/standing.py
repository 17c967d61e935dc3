"""Who may act: bans and erasures as the log says now, whatever the read model has applied.

Every messaging copy follows ``IDENTITY`` (``confab.authority.Follower``) and
notes each ban, unban and erasure here before acknowledging it, so identity's
call that made the change returns only once every copy refuses (or, after an
unban, allows) the user's next command. For users the follower has heard
nothing of since this copy started, the read model's flags hold: it is waited
for up to the follower's start at start-up (``app.setup``), so nothing
before it is missed.

An erasure is acknowledged only once the users projection has blanked the
user's messages (or ``read_wait`` passed), so history is blank too when the
erase call returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from confab.authority import USER_BANNED, USER_ERASED, USER_UNBANNED, Change
from confab.errors import Banned

Key = tuple[str, str]  # (workspace id, user id)


class Standing:
    def __init__(self, settled: Callable[[int], Awaitable[object]] | None = None) -> None:
        # Waits (bounded) until the users read model has applied an IDENTITY sequence.
        self.settled = settled
        self._banned: dict[Key, bool] = {}  # changes since this copy started
        self._erased: set[Key] = set()

    async def handle(self, change: Change) -> None:
        key = (change.workspace_id, change.entity_id)
        if change.type == USER_BANNED:
            self._banned[key] = True
        elif change.type == USER_UNBANNED:
            self._banned[key] = False
        elif change.type == USER_ERASED:
            self._erased.add(key)
            if self.settled is not None:
                await self.settled(change.seq)

    def banned(self, workspace_id: str, user_id: str, read_model: bool) -> bool:
        """Whether the user is banned now; ``read_model``: what the read model says."""
        return self._banned.get((workspace_id, user_id), read_model)

    def erased(self, workspace_id: str, user_id: str, read_model: bool) -> bool:
        return read_model or (workspace_id, user_id) in self._erased

    def check(self, workspace_id: str, user_id: str, read_model_banned: bool) -> None:
        """Raise ``Banned`` (403 ``banned``) if the user may not act."""
        if self.banned(workspace_id, user_id, read_model_banned):
            raise Banned()
