"""``confab:resume``: gap-free recovery of a conversation channel after a reconnect.

The client subscribes to ``private-conversation.{id}`` again and sends::

    {"event": "confab:resume", "data": {"channel": "private-conversation.{id}", "after_seq": N}}

From then on the socket's live traffic on that channel is held back (the
channel keeps it, see ``channels.Hold``); the backlog after ``N`` is fetched
from messaging (``ListEvents`` as the workspace, page after page) and written
in order; then what was held is written, leaving out every numbered event the
socket has by then. Every event after ``N`` arrives exactly once, in order,
then live ones. ``confab:resumed`` (``{after_seq, last_seq, count}``) on the
channel says it is done.

The backlog comes from this node's view of the conversation (``feed.Feed``),
brought up to what the stream's leader has stored first, and each event is
rendered against the conversation as it is now: a replay shows what history
shows (a since-deleted or hidden message as its tombstone, an edited one with
its current text, an erased user's blank). The socket's user must still be a
participant, checked against that view: a removed user's resume returns
nothing, and the socket is let go of the channel.

- Sent *before* subscribing, the resume starts the moment the subscription
  does: nothing can slip in between.
- Sent after, the live events delivered to the socket between its subscription
  and the resume are not sent again (they are known by the channel's
  sequence); if some arrived before older backlog entries, those entries
  follow them (still no gap and no duplicate).
- More than ``resume_max_events`` missed, the log unreadable, or a
  channel that is not a conversation: ``confab:resume_failed``
  (``{after_seq, reason, resync}``) and live traffic goes on; the client
  resyncs over REST (``resync`` is the widget API path).
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import msgspec

from confab import realtime
from confab.errors import ConfabError
from confab.ids import is_valid_id
from confab.logging import get_logger
from confab_fanout import protocol
from confab_fanout.feed import Tracked, json_text
from confab_fanout.metrics import RESUMES
from confab_fanout.protocol import ClientFrame, ProtocolError

if TYPE_CHECKING:
    from confab_fanout.channels import Channel
    from confab_fanout.connection import Connection

log = get_logger("confab.fanout.resume")

RESUME = "confab:resume"
RESUMED = "confab:resumed"
RESUME_FAILED = "confab:resume_failed"
MAX_PENDING = 32  # resumes a socket may ask for before subscribing
NOT_A_PARTICIPANT = "No longer a participant of this conversation."


class Timeline(Protocol):
    """What resuming needs of the node's conversations (``feed.Feed``)."""

    async def fresh(self, ws: str, conv: str) -> Tracked | None: ...

    async def backlog(self, tracked: Tracked, after: int) -> list[tuple[int, str, str]] | None: ...


class Node(Protocol):
    """What resuming needs of the node (``Fanout``)."""

    extensions: dict[str, Any]
    join_hooks: list[Any]

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...

    def let_go(self, app_id: str, names: Iterable[str], user_id: str, message: str) -> None: ...


class ResumeData(msgspec.Struct, frozen=True):
    channel: str
    after_seq: Annotated[int, msgspec.Meta(ge=0)] = 0


class TooMany(Exception):
    pass


class Resumer:
    def __init__(
        self, node: Node, timeline: Timeline, max_events: int = 1000, buffer: int = 1 << 20
    ) -> None:
        self.node = node
        self.timeline = timeline
        self.max_events = max_events
        self.buffer = buffer  # live bytes held per socket while it catches up

    def install(self) -> None:
        self.node.extensions[RESUME] = self.on_resume
        self.node.join_hooks.append(self.on_join)

    # -- the client's request ------------------------------------------------------------

    async def on_resume(self, conn: Connection, frame: ClientFrame) -> None:
        try:
            data = protocol.decode_data(frame.data, ResumeData)
        except ProtocolError:
            conn.send_frame(protocol.error(None, "confab:resume needs {channel, after_seq}"))
            return
        name = data.channel
        conversation_id = realtime.conversation_of(name)
        if conversation_id is None or not is_valid_id(conversation_id):
            self._failed(conn, name[:200], data.after_seq, "Only conversation channels resume.")
            return
        if not conn.within_subscribe_rate():
            RESUMES.labels("rate_limited").inc()
            self._failed(conn, name, data.after_seq, "Too many resumes; slow down.")
            return
        channel = conn.channels.get(name)
        if channel is None:
            # Before the subscription: it starts when the subscription does.
            pending = conn.resumes
            if pending is None:
                pending = conn.resumes = {}
            if len(pending) >= MAX_PENDING and name not in pending:
                self._failed(conn, name, data.after_seq, "Too many resumes before subscribing.")
                return
            pending[name] = data.after_seq
            return
        self._start(conn, channel, conversation_id, data.after_seq, live_since_join=True)

    def on_join(self, conn: Connection, channel: Channel) -> None:
        """A socket joined a channel: note where the conversation stood; start a resume
        it asked for before subscribing."""
        conversation_id = realtime.conversation_of(channel.name)
        if conversation_id is None:
            return
        marks = conn.joined_seqs
        if marks is None:
            marks = conn.joined_seqs = {}
        marks[channel.name] = channel.last_seq
        pending = conn.resumes
        if pending and channel.name in pending:
            after_seq = pending.pop(channel.name)
            if not pending:
                conn.resumes = None
            if is_valid_id(conversation_id):
                self._start(conn, channel, conversation_id, after_seq, live_since_join=False)

    # -- catching up -----------------------------------------------------------------------

    def _start(
        self,
        conn: Connection,
        channel: Channel,
        conversation_id: str,
        after_seq: int,
        *,
        live_since_join: bool,
    ) -> None:
        # What the socket got live on this channel since it joined: (low, high].
        high = channel.last_seq
        low = high
        if live_since_join:
            joined = (conn.joined_seqs or {}).get(channel.name, 0)
            if joined:
                low = joined
            elif channel.first_seq:
                low = channel.first_seq - 1
        hold = channel.hold(conn, self.buffer)
        if hold is None:
            self._failed(conn, channel.name, after_seq, "A resume of this channel is under way.")
            return
        RESUMES.labels("started").inc()
        self.node.spawn(self._run(conn, channel, conversation_id, after_seq, low, high))

    async def _run(
        self,
        conn: Connection,
        channel: Channel,
        conversation_id: str,
        after_seq: int,
        low: int,
        high: int,
    ) -> None:
        floor = max(after_seq, high if high > low else 0)
        sent = 0
        app_id = conn.app.id
        try:
            if high - after_seq > self.max_events:
                raise TooMany
            tracked = await self.timeline.fresh(app_id, conversation_id)
            user_id = channel.sockets.get(conn)
            if tracked is None or user_id is None or not tracked.view.is_member(user_id):
                self._failed(conn, channel.name, after_seq, NOT_A_PARTICIPANT)
                if user_id is not None:
                    self.node.let_go(app_id, (channel.name,), user_id, NOT_A_PARTICIPANT)
                return
            backlog = await self.timeline.backlog(tracked, after_seq)
            if backlog is None or len(backlog) > self.max_events:
                raise TooMany
            if conn.closing or conn.channels.get(channel.name) is not channel:
                return
            for seq, event, data in backlog:
                if low < seq <= high or event == realtime.CONVERSATION_CREATED:
                    continue  # it had this one live; or one never sent on this channel
                conn.send_frame(protocol.event_frame(event, channel.name, data))
                sent += 1
                floor = max(floor, seq)
            conn.send_frame(
                protocol.event_frame(
                    RESUMED,
                    channel.name,
                    json_text({"after_seq": after_seq, "last_seq": floor, "count": sent}),
                )
            )
            RESUMES.labels("done").inc()
        except TooMany:
            self._failed(
                conn,
                channel.name,
                after_seq,
                f"More than {self.max_events} events were missed; resync over the REST API.",
            )
        except ConfabError as exc:
            log.warning("resume_failed", conversation_id=conversation_id, error=exc.code)
            self._failed(conn, channel.name, after_seq, exc.message)
        except Exception:
            log.exception("resume_failed", conversation_id=conversation_id)
            self._failed(conn, channel.name, after_seq, "Internal error.")
        finally:
            channel.release(conn, floor)

    def _failed(self, conn: Connection, channel: str, after_seq: int, reason: str) -> None:
        RESUMES.labels("failed").inc()
        conversation_id = realtime.conversation_of(channel) or ""
        resync = f"/api/widget/conversations/{conversation_id}/events?after={after_seq}"
        data = json_text({"after_seq": after_seq, "reason": reason, "resync": resync})
        conn.send_frame(protocol.event_frame(RESUME_FAILED, channel, data))
