"""The tenant's directory of users: ``ListUsers``, a query of the read model only.

Erased users are never listed. Users come oldest change first (``updated_at``,
then id as the tie-breaker) with an opaque cursor (``confab.cursors``), so a
backend that syncs with ``updated_since`` set to its last run's start pages
through every change exactly once.
"""

from __future__ import annotations

from confab.contracts.identity import ListUsers, UserList
from confab.cursors import parse_time_cursor, time_cursor
from confab.errors import NotFound
from confab.ids import is_valid_id
from confab.rpc import CallContext
from confab_identity.store import Store


class Directory:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def list_users(self, query: ListUsers, _ctx: CallContext) -> UserList:
        if not is_valid_id(query.workspace_id):
            raise NotFound("Workspace not found.")
        users, has_more = await self.store.users(
            query.workspace_id,
            external_id=query.external_id,
            email=query.email,
            search=query.q,
            updated_since=query.updated_since,
            after=parse_time_cursor(query.cursor),
            limit=query.limit,
        )
        last = users[-1] if has_more and users else None
        return UserList(
            data=users,
            has_more=has_more,
            next_cursor=time_cursor(last.updated_at, last.id) if last else None,
        )
