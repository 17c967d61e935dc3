"""One user's data, for the tenant's GDPR export (``GET /api/v1/users/{id}/export``).

Queries of the read model only, as the workspace's backend: the conversations
the user takes or took part in (with their read marks), their reactions, and
the messages they sent, page by page in the order they were stored, each shown
as history shows it (a deleted one as its tombstone; an erased user has
nothing left to export). The gateway streams the pages out as one JSON
document, so an export of any size holds one page in memory at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from confab.contracts.messaging import (
    Actor,
    GetUserActivity,
    ListUserMessages,
    Membership,
    MessageList,
    UserActivity,
    UserReaction,
)
from confab.errors import Forbidden, NotFound
from confab.ids import is_valid_id
from confab.rpc import CallContext

if TYPE_CHECKING:
    from confab.contracts.base import Request
    from confab_messaging.handlers import Handler, Handlers


def _tenant(actor: Actor, user_id: str) -> tuple[str, str]:
    if actor.user_id is not None:
        raise Forbidden("Only the workspace's backend exports a user's data.")
    if not (is_valid_id(actor.workspace_id) and is_valid_id(user_id)):
        raise NotFound("User not found.")
    return actor.workspace_id, user_id


class Exports:
    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self.store = handlers.store

    async def user_activity(self, query: GetUserActivity, _ctx: CallContext) -> UserActivity:
        workspace_id, user_id = _tenant(query.actor, query.user_id)
        rows = await self.store.memberships(workspace_id, user_id)
        reactions = await self.store.user_reactions(workspace_id, user_id)
        return UserActivity(
            memberships=[
                Membership(
                    conversation_id=r["id"],
                    type=r["type"],
                    title=r["title"],
                    metadata=dict(r["metadata"] or {}),
                    created_at=r["created_at"],
                    active=r["active"],
                    last_read_seq=r["last_read_seq"],
                )
                for r in rows
            ],
            reactions=[
                UserReaction(
                    conversation_id=r["conversation_id"],
                    message_id=r["message_id"],
                    emoji=r["emoji"],
                )
                for r in reactions
            ],
        )

    async def user_messages(self, query: ListUserMessages, _ctx: CallContext) -> MessageList:
        workspace_id, user_id = _tenant(query.actor, query.user_id)
        after = int(query.cursor) if query.cursor else 0
        page = await self.store.sent_by(workspace_id, user_id, after=after, limit=query.limit)
        data = await self.handlers.render_messages(workspace_id, page, None)
        cursor = str(page.rows[-1]["stream_seq"]) if page.has_more and page.rows else None
        return MessageList(data=data, has_more=page.has_more, next_cursor=cursor)

    def routes(self) -> list[tuple[type[Request], Handler]]:
        return [(GetUserActivity, self.user_activity), (ListUserMessages, self.user_messages)]
