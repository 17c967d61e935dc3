"""What both sides of messaging look up outside a conversation's log.

``commands`` (the write side) and ``queries`` (the read side) share these
look-ups, each small and bounded:

- users, as messaging's users read model has them, through an in-process
  cache dropped whenever that projection applies anything; for a decision a
  user the read model does not know yet is waited for up to its last
  ``IDENTITY`` event (``known_users``);
- who may act now: bans and erasures as the log says (``Standing``, fed by an
  ``IDENTITY`` follower), the read model's flags otherwise;
- attachments with fresh URLs, from media (the only one that can sign them);
- where a message is (reports and moderation name a message, not its
  conversation), and how far the conversations read model has got.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from confab.bus import CONVERSATIONS, IDENTITY
from confab.contracts.events import identity
from confab.contracts.events.messaging import Attachment, subject
from confab.contracts.media import AttachmentList, GetAttachments
from confab.contracts.messaging import Actor
from confab.conversation import MessageView, shown_attachment_ids
from confab.errors import InvalidRequest, NotFound, Unavailable
from confab.ids import is_valid_id
from confab.logging import get_logger
from confab.projection import ProjectionRunner
from confab.rpc import RpcClient
from confab_messaging import domain
from confab_messaging.standing import Standing
from confab_messaging.store import Row, Store, UserRow

log = get_logger("confab_messaging")

USER_CACHE_MAX = 100_000


def valid(value: str | None, what: str) -> str:
    """An id from a request, checked before it goes into a subject; NotFound if malformed."""
    if value is None or not is_valid_id(value):
        raise NotFound(f"{what} not found.")
    return value


def conversation_subject(actor: Actor, conversation_id: str) -> str:
    """The subject of a conversation named in a request, its ids checked first."""
    workspace_id = valid(actor.workspace_id, "Conversation")
    return subject(workspace_id, valid(conversation_id, "Conversation"))


class Lookups:
    """The read models and services a decision or a reply looks at, with their waits."""

    def __init__(
        self,
        js: JetStreamContext,
        store: Store,
        conversations: ProjectionRunner,
        users: ProjectionRunner,
        rpc: RpcClient,
        *,
        read_wait: float = 2.0,
        standing: Standing | None = None,
        search: ProjectionRunner | None = None,
    ) -> None:
        self.js = js
        self.store = store
        self.conversations = conversations
        self.users_runner = users
        self.search = search  # the search index, settled with the conversations
        self.rpc = rpc  # asks media about attachments
        self.read_wait = read_wait
        self._user_cache: dict[tuple[str, str], UserRow] = {}
        self._users_at = -1
        # Bans and erasures as the log says now (an IDENTITY follower feeds it).
        self.standing = standing or Standing(self.users_settled)

    async def users_settled(self, seq: int) -> None:
        """Wait (bounded) until the users read model has applied IDENTITY's ``seq``."""
        if not await self.users_runner.wait_for(seq, self.read_wait):
            log.warning("users_read_model_behind", seq=seq, checkpoint=self.users_runner.checkpoint)

    # -- the conversations read model ------------------------------------------------------

    async def min_seq(self, min_seq: int, *, search: bool = False) -> None:
        """Unavailable unless the read model (``search``: and the search index) has applied
        ``min_seq`` (waiting, bounded)."""
        if min_seq <= 0:
            return
        runners = [self.conversations]
        if search and self.search is not None:
            runners.append(self.search)
        for runner in runners:
            if not await runner.wait_for(min_seq, self.read_wait):
                raise Unavailable("The read model is catching up; try again shortly.")

    async def not_past_the_end(
        self, min_seq: int, stream: str = CONVERSATIONS.name, field: str = "min_seq"
    ) -> None:
        """Refuse a ``min_seq`` a client gave (a frame's ``seq``) that the log (``stream``)
        has not reached: no projection will ever apply it, so waiting would only delay
        the 4xx. The gateway's own ``min_seq`` (read-your-writes) is always a stored
        position and is not checked."""
        last = (await self.js.stream_info(stream)).state.last_seq
        if min_seq > last:
            raise InvalidRequest(
                f"{field} is past the end of the log.",
                {field: f"at most {last}: a seq from an event or a write's reply"},
            )

    async def users_min_seq(self, seq: int) -> None:
        """Unavailable unless the users read model (the names shown) has applied IDENTITY's
        ``seq``, a client's (an ``inbox.profile`` frame's): checked against the log first."""
        if seq <= self.users_runner.checkpoint:
            return
        await self.not_past_the_end(seq, IDENTITY.name, "users_min_seq")
        if not await self.users_runner.wait_for(seq, self.read_wait):
            raise Unavailable("The read model is catching up; try again shortly.")

    async def settle(self, seq: int) -> bool:
        """Wait (bounded) until the read model (and the search index) shows ``seq``.

        A write's reply never fails for a slow read model: what it reads is at
        worst a little stale (and the write itself is durable either way).
        """
        if await self.conversations.wait_for(seq, self.read_wait) and (
            self.search is None or await self.search.wait_for(seq, self.read_wait)
        ):
            return True
        log.warning("read_model_behind", seq=seq, checkpoint=self.conversations.checkpoint)
        return False

    async def catch_up(self, since: int = 0) -> bool:
        """Wait (bounded) until the conversations read model has all the stream held when
        asked; True if its checkpoint is now past ``since``."""
        last = (await self.js.stream_info(CONVERSATIONS.name)).state.last_seq
        if last > self.conversations.checkpoint:
            await self.conversations.wait_for(last, self.read_wait)
        return self.conversations.checkpoint > since

    async def locate(self, actor: Actor, message_id: str) -> str:
        """The conversation of a message named without one (reports, moderation)."""
        workspace_id = valid(actor.workspace_id, "Message")
        message_id = valid(message_id, "Message")
        seen = self.conversations.checkpoint
        found = await self.store.message_location(workspace_id, message_id)
        # Asked again only if the read model moved since the first answer: it may have
        # caught up on its own while the first query ran.
        if found is None and await self.catch_up(since=seen):
            found = await self.store.message_location(workspace_id, message_id)
        if found is None:
            raise NotFound(domain.MESSAGE_NOT_FOUND)
        return found

    # -- users -----------------------------------------------------------------------------

    async def users(self, workspace_id: str, ids: Iterable[str]) -> dict[str, UserRow]:
        """Users as the read model has them, for display (no waiting), through an in-process
        cache that is dropped whenever the users projection applies anything (it only sees
        user events), so it is never staler than the table and spares a query per post."""
        checkpoint = self.users_runner.checkpoint
        if checkpoint != self._users_at or len(self._user_cache) > USER_CACHE_MAX:
            self._user_cache.clear()
            self._users_at = checkpoint
        wanted = set(ids)
        found = {
            i: row for i in wanted if (row := self._user_cache.get((workspace_id, i))) is not None
        }
        missing = wanted - found.keys()
        if missing:
            loaded = await self.store.users(workspace_id, missing)
            if self.users_runner.checkpoint == checkpoint:
                self._user_cache.update(((workspace_id, i), row) for i, row in loaded.items())
            found.update(loaded)
        return found

    async def known_users(self, workspace_id: str, ids: Sequence[str]) -> dict[str, UserRow]:
        """Users for a decision: one the read model does not know yet (it was created a
        moment ago) is waited for, up to the last event on its IDENTITY subject."""
        found = await self.users(workspace_id, ids)
        missing = [i for i in ids if i not in found]
        if not missing:
            return found
        found.update(await self._caught_up_users(workspace_id, missing))
        return found

    async def _caught_up_users(self, workspace_id: str, ids: Sequence[str]) -> dict[str, UserRow]:
        """Users as the read model has them once it applied their last IDENTITY events."""

        async def last(user_id: str) -> int:
            try:
                msg = await self.js.get_last_msg(
                    IDENTITY.name, identity.subject(workspace_id, "user", user_id), direct=False
                )
            except NotFoundError:
                return 0
            return msg.seq or 0

        target = 0
        for start in range(0, len(ids), 64):
            chunk = ids[start : start + 64]
            target = max([target, *await asyncio.gather(*(last(i) for i in chunk))])
        if not target:
            return {}
        await self.users_runner.wait_for(target, self.read_wait)
        return await self.users(workspace_id, ids)

    async def may_act(self, actor: Actor, user_id: str | None = None) -> None:
        """Refuse a banned user (403 ``banned``): ``user_id``, or the widget's own user."""
        user_id = user_id or actor.user_id
        if user_id is None:
            return  # the tenant's backend, acting as itself
        workspace_id = valid(actor.workspace_id, "User")
        found = (await self.users(workspace_id, [user_id])).get(user_id)
        self.standing.check(workspace_id, user_id, found is not None and found.banned)

    # -- attachments -----------------------------------------------------------------------

    async def attachments(
        self,
        workspace_id: str,
        ids: Iterable[str],
        *,
        conversation_id: str | None = None,
        uploader_id: str | None = None,
    ) -> dict[str, Attachment]:
        """Attachment objects with fresh URLs, from media (the only one that can sign them).

        Asked only when there are attachments to show; media being down is a 503.
        """
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        found: AttachmentList = await self.rpc.call(
            GetAttachments(
                workspace_id=workspace_id,
                attachment_ids=wanted,
                conversation_id=conversation_id,
                uploader_id=uploader_id,
            )
        )
        return {a.attachment.id: a.attachment for a in found.data}

    async def shown_attachments(
        self, workspace_id: str, messages: Iterable[MessageView], moderator: bool = False
    ) -> dict[str, Attachment]:
        """The attachments these messages show (``moderator``: to the workspace's
        moderators), with fresh URLs."""
        shown = [i for m in messages for i in shown_attachment_ids(m, moderator)]
        return await self.attachments(workspace_id, shown)

    async def row_attachments(
        self, workspace_id: str, rows: Iterable[Row], moderator: bool = False
    ) -> dict[str, Attachment]:
        views = [MessageView.from_row(r) for r in rows]
        return await self.shown_attachments(workspace_id, views, moderator)
