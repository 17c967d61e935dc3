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

- Sent *before* subscribing, the resume starts the moment the subscription
  does: nothing can slip in between.
- Sent after, the live events delivered to the socket between its subscription
  and the resume are not sent again (they are known by the channel's
  sequence); if some arrived before older backlog entries, those entries
  follow them (still no gap and no duplicate).
- More than ``fanout_resume_max_events`` missed, messaging unavailable, or a
  channel that is not a conversation: ``confab:resume_failed``
  (``{after_seq, reason, resync}``) and live traffic goes on; the client
  resyncs over REST (``resync`` is the widget API path).

Sockets resuming the same conversation from the same ``N`` at once (a node
died; its clients all came back) share one fetch.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import msgspec

from confab import realtime
from confab.contracts.messaging import EventList, ListEvents
from confab.errors import ConfabError
from confab.ids import is_valid_id
from confab.logging import get_logger
from confab.rpc import RpcClient
from confab_fanout import protocol
from confab_fanout.feed import internal_actor, json_text
from confab_fanout.metrics import RESUMES
from confab_fanout.protocol import ClientFrame, ProtocolError

if TYPE_CHECKING:
    from confab_fanout.channels import Channel
    from confab_fanout.connection import Connection
    from confab_fanout.fanout import Fanout

log = get_logger("confab.fanout.resume")

RESUME = "confab:resume"
RESUMED = "confab:resumed"
RESUME_FAILED = "confab:resume_failed"
PAGE = 100
MAX_PENDING = 32  # resumes a socket may ask for before subscribing


class ResumeData(msgspec.Struct, frozen=True):
    channel: str
    after_seq: Annotated[int, msgspec.Meta(ge=0)] = 0


class TooMany(Exception):
    pass


# (seq, event name, frame JSON) of one backlog entry; the frame is encoded once for all.
Backlog = list[tuple[int, str, bytes]]


class Resumer:
    def __init__(self, fanout: Fanout, client: RpcClient, max_events: int = 1000) -> None:
        self.fanout = fanout
        self.client = client
        self.max_events = max_events
        self._inflight: dict[tuple[str, str, int], asyncio.Future[Backlog]] = {}

    def install(self) -> None:
        self.fanout.extensions[RESUME] = self.on_resume
        self.fanout.join_hooks.append(self.on_join)

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
        hold = channel.hold(conn, self.fanout.settings.fanout_send_buffer_bytes)
        if hold is None:
            self._failed(conn, channel.name, after_seq, "A resume of this channel is under way.")
            return
        RESUMES.labels("started").inc()
        self.fanout.spawn(self._run(conn, channel, conversation_id, after_seq, low, high))

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
        try:
            if high - after_seq > self.max_events:
                raise TooMany
            app_id = conn.app.id
            backlog = await self._backlog(app_id, conversation_id, after_seq)
            # A shared fetch may have begun before this socket's hold: it must reach what
            # the channel had delivered when the hold began (later ones are held).
            covered = backlog[-1][0] if backlog else after_seq
            if covered < high:
                backlog = backlog + await self._fetch(app_id, conversation_id, covered)
            if conn.closing or conn.channels.get(channel.name) is not channel:
                return
            for seq, event, payload in backlog:
                if low < seq <= high or event == realtime.CONVERSATION_CREATED:
                    continue  # it had this one live; or one never sent on this channel
                conn.send_frame(payload)
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

    async def _backlog(self, app_id: str, conversation_id: str, after_seq: int) -> Backlog:
        key = (app_id, conversation_id, after_seq)
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Backlog] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            backlog = await self._fetch(app_id, conversation_id, after_seq)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it
            raise
        else:
            future.set_result(backlog)
            return backlog
        finally:
            del self._inflight[key]

    async def _fetch(self, app_id: str, conversation_id: str, after_seq: int) -> Backlog:
        name = realtime.conversation_channel(conversation_id)
        out: Backlog = []
        after = after_seq
        while True:
            page: EventList = await self.client.call(
                ListEvents(
                    actor=internal_actor(app_id),
                    conversation_id=conversation_id,
                    after=after,
                    limit=PAGE,
                )
            )
            for e in page.data:
                frame = protocol.event_frame(e.event, name, json_text(e.data))
                out.append((e.seq, e.event, frame))
            if len(out) > self.max_events:
                raise TooMany
            if not page.has_more or not page.data:
                return out
            after = page.data[-1].seq

    def _failed(self, conn: Connection, channel: str, after_seq: int, reason: str) -> None:
        RESUMES.labels("failed").inc()
        conversation_id = realtime.conversation_of(channel) or ""
        resync = f"/api/widget/conversations/{conversation_id}/events?after={after_seq}"
        data = json_text({"after_seq": after_seq, "reason": reason, "resync": resync})
        conn.send_frame(protocol.event_frame(RESUME_FAILED, channel, data))
