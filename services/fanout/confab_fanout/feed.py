"""The node's conversations, folded from the event log, and what they deliver.

A fanout node keeps a ``ConversationView`` (``confab.conversation``, the fold
every reader shares) of each conversation it has local subscribers for, with
the last ``keep`` entries of its timeline. The view is loaded from the log
itself (batched direct gets on the conversation's subject) when a socket first
subscribes, and kept current by the stored events as ``CONVERSATIONS``
re-publishes them (``live.conv.evt.<ws>.<conv>``, with ``Nats-Sequence`` and
``Nats-Last-Sequence``). Nothing is asked of messaging or media: the view is
what the log means now, so

- a live frame renders its entry against the message as it is at that point
  of the log (``conversation.payload``), and a replay (``confab:resume``) renders
  each entry against the message as it is now: a since-deleted or hidden
  message as its tombstone, an edited one with its current text, an erased
  user's blank;
- membership is a live fact: subscribing and resuming are checked against the
  view, after a check with the stream's leader that the view has every event
  stored on the conversation so far (``fresh``), so a removal that returned is
  always seen;
- mutes (``participant.muted`` / ``unmuted``, ``seq`` 0: outside the timeline) are
  folded into ``Tracked.muted`` in the same stream order, so the authority checks of
  client events (``authority.Gatekeeper.may_send``) follow the log like membership;
  every stored event, with a seq or not, moves the view's stream sequence on, so a
  ``seq`` 0 event last on the subject is "applied" too (``fresh`` waits for nothing);
- a conversation's events are applied and delivered in stream order, one
  conversation at a time: while one waits (for the log, or for a sender's
  profile from identity), the ones after it wait behind it, and only those.

A stored event this node missed (``Nats-Last-Sequence`` is not the last sequence
its view has; a NATS reconnect, a dropped message) is read from the log and
delivered before the next one. A missed *last* event has no next one to reveal
it: every ``recheck`` seconds the node asks the stream for the last sequence of
each conversation with local subscribers and recent activity (one batched
request), and of every conversation it follows after a reconnect or a dropped
message; one found behind catches up. So a missed event reaches the sockets
within ``recheck`` seconds plus one round trip of the stream having it.

If the log cannot be read for a while, the conversation's sockets are closed
with 4200 (they reconnect, to this or another node, and resume by seq) and the
view is dropped, to be loaded again by the next subscriber.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from confab import conversation, realtime
from confab.bus import CONVERSATIONS
from confab.contracts.events.messaging import (
    ConversationCreated,
    ConversationEvent,
    MessagePosted,
    subject,
)
from confab.contracts.events.moderation import ParticipantMuted, ParticipantUnmuted
from confab.conversation import ConversationView, Entry
from confab.errors import ConfabError, Unavailable
from confab.eventlog import read_subject
from confab.events import H_EVENT, H_SCHEMA, UnknownEvent, decode_event
from confab.logging import get_logger
from confab.personal import KeyRing
from confab_fanout.channels import ChannelRegistry
from confab_fanout.metrics import DOMAIN_EVENTS
from confab_fanout.profiles import ProfileCache

log = get_logger("confab.fanout.feed")

LIVE_CONVERSATIONS = "live.conv.evt.>"
TYPING = "ephemeral.*.*.typing"
H_SEQUENCE = "Nats-Sequence"
H_LAST_SEQUENCE = "Nats-Last-Sequence"
# Waits between attempts to read the log, before the conversation's sockets are sent away.
READ_RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0)
RECHECK_BATCH = 256  # conversations per request for their last sequence

_json = msgspec.json.Encoder().encode


def json_text(value: Any) -> str:
    return _json(value).decode()


RENDERED = DOMAIN_EVENTS.labels("rendered")
SKIPPED = DOMAIN_EVENTS.labels("skipped")


class Typing(msgspec.Struct, frozen=True):
    user_id: str
    name: str
    is_typing: bool


_typing = msgspec.json.Decoder(Typing)

Key = tuple[str, str]  # (workspace id, conversation id)


# -- what the feed needs of the rest of the node and of the log ------------------------------


class Hub(Protocol):
    """Where entries go: this node's channels (``Fanout`` is one)."""

    channels: ChannelRegistry

    def deliver_seq(self, app_id: str, name: str, event: str, data: str, seq: int) -> int: ...

    def deliver_local(self, app_id: str, channels: Iterable[str], event: str, data: str) -> int: ...

    def let_go(self, app_id: str, names: Iterable[str], user_id: str, message: str) -> None: ...

    def send_away(self, app_id: str, names: Iterable[str], message: str) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...


class ConversationLog(Protocol):
    """The stored events of conversations (``JetStreamLog``; an in-memory one in tests)."""

    def read(self, ws: str, conv: str, after: int) -> AsyncIterator[tuple[int, ConversationEvent]]:
        """The events stored on the conversation after stream sequence ``after``, in order."""
        ...

    async def last(self, ws: str, conv: str) -> int:
        """The stream sequence of the conversation's last stored event (0: none), as the
        stream's leader has it."""
        ...

    async def lasts(self, keys: Sequence[Key]) -> dict[Key, int]:
        """The last stream sequence of each conversation (possibly from a replica)."""
        ...


class JetStreamLog:
    """``CONVERSATIONS`` through batched direct gets, sealed fields revealed."""

    def __init__(self, nc: NATS, js: JetStreamContext, keys: KeyRing | None) -> None:
        self.nc = nc
        self.js = js
        self.keys = keys

    async def read(
        self, ws: str, conv: str, after: int
    ) -> AsyncIterator[tuple[int, ConversationEvent]]:
        async for envelope in read_subject(self.nc, CONVERSATIONS.name, subject(ws, conv), after):
            event = envelope.event
            if not isinstance(event, ConversationEvent):
                continue
            if self.keys is not None and getattr(event, "sealed", None):
                event = await self.keys.reveal(ws, event)
            yield envelope.seq, event

    async def last(self, ws: str, conv: str) -> int:
        try:
            # Not direct: a direct get may be served by a replica that lags the leader.
            msg = await self.js.get_last_msg(CONVERSATIONS.name, subject(ws, conv), direct=False)
        except NotFoundError:
            return 0
        return msg.seq or 0

    async def lasts(self, keys: Sequence[Key]) -> dict[Key, int]:
        subjects = {subject(ws, conv): (ws, conv) for ws, conv in keys}
        out: dict[Key, int] = {}
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        try:
            request = {"multi_last": list(subjects), "batch": len(subjects)}
            await self.nc.publish(
                f"$JS.API.DIRECT.GET.{CONVERSATIONS.name}", json.dumps(request).encode(), inbox
            )
            while True:
                msg = await sub.next_msg(timeout=5.0)
                headers = msg.headers or {}
                if headers.get("Status"):
                    return out  # 204: end of the batch; 404: none of them stored
                key = subjects.get(headers.get("Nats-Subject", ""))
                if key is not None:
                    out[key] = int(headers.get(H_SEQUENCE) or 0)
        finally:
            await sub.unsubscribe()


# -- the node's views ---------------------------------------------------------------------------


class Tracked:
    """One conversation this node follows: its view, the last entries of its timeline,
    and the events waiting behind one that needs I/O."""

    __slots__ = ("busy", "entries", "key", "loaded", "muted", "queue", "touched", "view", "want")

    def __init__(self, key: Key, keep: int) -> None:
        self.key = key
        self.view = ConversationView(key[1], key[0])
        self.entries: deque[Entry] = deque(maxlen=keep)
        # Live events waiting behind I/O, as (stream seq, last seq on the subject, event).
        self.queue: deque[tuple[int, int, ConversationEvent]] = deque()
        self.busy: asyncio.Event | None = None  # set (and dropped) when the I/O is done
        self.loaded = False
        self.want = 0  # catch up with the log to at least this stream sequence
        self.touched = 0.0  # monotonic time of the last live event or subscription
        # Who is muted here: user id -> until (None: until lifted), as the log says.
        self.muted: dict[str, datetime | None] = {}

    @property
    def oldest_entry(self) -> int:
        """The seq of the first entry kept (later resumes than this can be served)."""
        return self.entries[0].seq if self.entries else self.view.last_seq + 1


class Feed:
    def __init__(
        self,
        nc: NATS,
        hub: Hub,
        log_: ConversationLog,
        profiles: ProfileCache,
        *,
        keys: KeyRing | None = None,
        keep: int = 1000,
        max_idle: int = 2000,
        recheck: float = 1.0,
        recheck_window: float = 60.0,
    ) -> None:
        self.nc = nc
        self.hub = hub
        self.channels = hub.channels
        self.log = log_
        self.profiles = profiles
        self.keys = keys  # reveals sealed message text from the live feed
        self.keep = keep  # timeline entries kept per conversation (resumes reach back this far)
        self.max_idle = max_idle  # conversations kept without local subscribers
        self.recheck = recheck
        self.recheck_window = recheck_window
        self.tracked: OrderedDict[Key, Tracked] = OrderedDict()
        # Users erased while this node ran: their text in events still queued is blanked
        # as it is applied (what came before is blanked in the views at once).
        self.erased: set[tuple[str, str]] = set()
        self._reconnects = 0  # NATS reconnects seen: after one, every view is checked
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.profiles.start()
        self._subs = [
            await self.nc.subscribe(LIVE_CONVERSATIONS, cb=self._on_event),
            await self.nc.subscribe(TYPING, cb=self._on_typing),
        ]
        self._task = asyncio.create_task(self._recheck_loop(), name="fanout-recheck")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs = []
        await self.profiles.stop()

    # -- what subscriptions and resumes ask -----------------------------------------------

    async def fresh(self, ws: str, conv: str) -> Tracked | None:
        """The conversation with every event the stream's leader has stored on it so far
        applied (and delivered); None if it does not exist."""
        last = await self.log.last(ws, conv)
        if not last:
            return None
        key = (ws, conv)
        tracked = self.tracked.get(key)
        if tracked is None:
            tracked = self.tracked[key] = Tracked(key, self.keep)
        self.tracked.move_to_end(key)
        tracked.touched = time.monotonic()
        while tracked.view.stream_seq < last:
            if tracked.busy is None:
                tracked.want = max(tracked.want, last)
                self._work(tracked)
            assert tracked.busy is not None
            await tracked.busy.wait()
            if self.tracked.get(key) is not tracked:
                raise Unavailable("The conversation's events cannot be read now.")
        self._evict()
        return tracked if tracked.view.exists else None

    async def backlog(self, tracked: Tracked, after: int) -> list[tuple[int, str, str]] | None:
        """The entries after seq ``after``, each rendered against the view as it is now:
        (seq, event name, data JSON). None if some are older than the entries kept."""
        if after + 1 < tracked.oldest_entry:
            return None
        missing = self.profiles.missing(
            tracked.key[0], self.authors(tracked, (e for e in tracked.entries if e.seq > after))
        )
        if missing:
            await self.profiles.fetch(tracked.key[0], missing)
        # Rendered after the wait, from the view as it is then (entries may have come).
        return [
            (e.seq, e.name, data)
            for e in tracked.entries
            if e.seq > after and (data := self.payload(tracked, e)) is not None
        ]

    def following(self, ws: str, conv: str) -> Tracked | None:
        return self.tracked.get((ws, conv))

    def erase(self, ws: str, user_id: str) -> None:
        """An erased user's messages are blank in every view of the workspace from now on."""
        self.erased.add((ws, user_id))
        if self.keys is not None:
            self.keys.forget(ws, user_id)
        for (view_ws, _), tracked in self.tracked.items():
            if view_ws == ws:
                conversation.erase(tracked.view, user_id)

    # -- intake ------------------------------------------------------------------------

    async def _on_event(self, msg: Msg) -> None:
        headers = msg.headers
        if not headers:
            return
        parts = msg.subject.split(".")
        if len(parts) != 5:  # live.conv.evt.<workspace>.<conversation>
            return
        ws, conv = parts[3], parts[4]
        key = (ws, conv)
        event_type = headers.get(H_EVENT, "")
        if key not in self.tracked and event_type != ConversationCreated.type:
            SKIPPED.inc()
            return  # nobody here follows it: not even decoded
        try:
            stream_seq = int(headers.get(H_SEQUENCE) or 0)
            last_on_subject = int(headers.get(H_LAST_SEQUENCE) or 0)
            event = decode_event(event_type, int(headers.get(H_SCHEMA) or 1), msg.data)
        except (UnknownEvent, msgspec.DecodeError, KeyError, ValueError) as exc:
            log.warning("conversation_event_unreadable", subject=msg.subject, error=str(exc))
            return
        if not isinstance(event, ConversationEvent):
            return
        if self.keys is not None and getattr(event, "sealed", None):
            # Callbacks of one subscription run one after another: order is kept.
            event = await self.keys.reveal(ws, event)
        self.take(ws, conv, event, stream_seq, last_on_subject)

    def take(
        self, ws: str, conv: str, event: ConversationEvent, stream_seq: int, last_on_subject: int
    ) -> None:
        """One stored event, as the stream re-published it."""
        tracked = self.tracked.get((ws, conv))
        if tracked is None:
            if isinstance(event, ConversationCreated):
                self._created(ws, event, stream_seq)
            return
        tracked.touched = time.monotonic()
        if tracked.busy is not None:
            tracked.queue.append((stream_seq, last_on_subject, event))
            return
        view = tracked.view
        if stream_seq <= view.stream_seq:
            return  # it has it already
        if last_on_subject != view.stream_seq or not self._ready(tracked, event):
            if last_on_subject != view.stream_seq:
                DOMAIN_EVENTS.labels("gap").inc()
                log.info(
                    "conversation_events_missed",
                    conversation_id=conv,
                    have=view.stream_seq,
                    previous=last_on_subject,
                )
            tracked.queue.append((stream_seq, last_on_subject, event))
            self._work(tracked)
            return
        self._apply(tracked, event, stream_seq)

    # -- applying and delivering ----------------------------------------------------------

    def _author(self, tracked: Tracked, event: ConversationEvent) -> str | None:
        """Whose profile rendering ``event`` needs."""
        if isinstance(event, MessagePosted):
            return event.sender_id
        message_id = getattr(event, "message_id", None)
        found = tracked.view.messages.get(message_id) if message_id else None
        return found.sender_id if found is not None else None

    def _ready(self, tracked: Tracked, event: ConversationEvent) -> bool:
        """Whether ``event`` can be applied and delivered now (no profile to fetch)."""
        if not self._subscribed(tracked.key):
            return True
        author = self._author(tracked, event)
        return author is None or self.profiles.get(tracked.key[0], author) is not None

    def _subscribed(self, key: Key) -> bool:
        return self.channels.get(key[0], realtime.conversation_channel(key[1])) is not None

    def _apply(self, tracked: Tracked, event: ConversationEvent, stream_seq: int) -> None:
        view = tracked.view
        entry = conversation.evolve(view, event, stream_seq)
        if entry is None:
            if stream_seq > view.stream_seq:
                # Outside the timeline (seq 0: a mute, a shadowed post, a report): no
                # entry, but the view has it, and a mute is in force from here on.
                view.stream_seq = stream_seq
                if isinstance(event, ParticipantMuted):
                    tracked.muted[event.user_id] = event.until
                elif isinstance(event, ParticipantUnmuted):
                    tracked.muted.pop(event.user_id, None)
            return
        if self.erased and entry.message_id is not None:
            message = tracked.view.messages.get(entry.message_id)
            if message is not None and (tracked.key[0], message.sender_id) in self.erased:
                conversation.blank(message)
        tracked.entries.append(entry)
        if tracked.loaded:
            self._deliver(tracked, entry)

    def _deliver(self, tracked: Tracked, entry: Entry) -> None:
        ws, conv = tracked.key
        name = realtime.conversation_channel(conv)
        if self.channels.get(ws, name) is None:
            SKIPPED.inc()
        elif entry.name != realtime.CONVERSATION_CREATED:
            RENDERED.inc()
            data = self.payload(tracked, entry)
            if data is not None:
                self.hub.deliver_seq(ws, name, entry.name, data, entry.seq)
        if entry.name == realtime.PARTICIPANT_REMOVED:
            # They see that they left, and nothing after it.
            self.hub.let_go(
                ws,
                (name, realtime.presence_channel(conv)),
                entry.data["user_id"],
                "No longer a participant of this conversation.",
            )

    def payload(self, tracked: Tracked, entry: Entry) -> str | None:
        """``entry`` rendered against the view as it is now (JSON text); None if it names a
        message the view does not have."""
        ws = tracked.key[0]
        message_id = entry.message_id
        message = tracked.view.messages.get(message_id) if message_id is not None else None
        author = None
        if message is not None and message.sender_id is not None:
            author = realtime.sender(message.sender_id, self.profiles.get(ws, message.sender_id))
        data = conversation.payload(entry, message, author, conversation=tracked.view)
        return None if data is None else json_text(data)

    def authors(self, tracked: Tracked, entries: Iterable[Entry]) -> list[str]:
        """The senders of the messages ``entries`` show (whose profiles rendering needs)."""
        messages = tracked.view.messages
        return [
            m.sender_id
            for e in entries
            if (i := e.message_id) is not None
            and (m := messages.get(i)) is not None
            and m.sender_id is not None
        ]

    def _created(self, ws: str, event: ConversationCreated, stream_seq: int) -> None:
        """``conversation.created`` on the creators' ``private-user.{id}`` channels here."""
        local = self.channels.of_app(ws)
        names = [n for u in event.participant_ids if (n := realtime.user_channel(u)) in local]
        if not names:
            return
        view = ConversationView(event.conversation_id, ws)
        entry = conversation.evolve(view, event, stream_seq)
        assert entry is not None
        missing = self.profiles.missing(ws, event.participant_ids)

        async def send() -> None:
            found = await self.profiles.fetch(ws, missing) if missing else {}
            profiles = {
                u: p
                for u in event.participant_ids
                if (p := found.get(u) or self.profiles.get(ws, u)) is not None
            }
            data = json_text(conversation.created_payload(view, entry, profiles))
            self.hub.deliver_local(ws, names, realtime.CONVERSATION_CREATED, data)

        self.hub.spawn(send())

    # -- I/O, one conversation at a time -------------------------------------------------

    def _work(self, tracked: Tracked) -> None:
        if tracked.busy is None:
            tracked.busy = asyncio.Event()
            self.hub.spawn(self._drain(tracked))

    async def _drain(self, tracked: Tracked) -> None:
        """Load or catch up from the log, then apply what waited, each in order."""
        busy = tracked.busy
        assert busy is not None
        try:
            if not tracked.loaded or tracked.want > tracked.view.stream_seq:
                await self._read(tracked, tracked.want)
                tracked.loaded = True
            queue = tracked.queue
            while queue:
                stream_seq, last_on_subject, event = queue[0]
                view = tracked.view
                if stream_seq > view.stream_seq and last_on_subject != view.stream_seq:
                    await self._read(tracked, stream_seq)  # what this node missed, and this
                elif stream_seq > view.stream_seq:
                    author = self._author(tracked, event)
                    if author is not None and self._subscribed(tracked.key):
                        await self.profiles.fetch(tracked.key[0], [author])
                    self._apply(tracked, event, stream_seq)
                queue.popleft()
                if tracked.want > tracked.view.stream_seq:
                    await self._read(tracked, tracked.want)
        except ConfabError as exc:
            self._lost(tracked, exc)
        except Exception:
            log.exception("conversation_events_failed", conversation_id=tracked.key[1])
            self._lost(tracked, None)
        finally:
            tracked.busy = None
            busy.set()

    async def _read(self, tracked: Tracked, target: int) -> None:
        """Apply (and deliver) what the log has after the view, until the view reaches
        stream sequence ``target``; tried again for a while (the log may be away, or a
        replica answering direct gets may lag the leader)."""
        conv = tracked.key[1]
        for delay in (*READ_RETRY_DELAYS, None):
            try:
                await self._read_once(tracked)
                if tracked.view.stream_seq >= target:
                    return
                problem = f"stopped at {tracked.view.stream_seq}, not {target}"
            except ConfabError as exc:
                problem = exc.code
            except TimeoutError:
                problem = "timeout"
            if delay is None:
                raise Unavailable(f"The conversation's events cannot be read ({problem}).")
            log.warning("conversation_read_failed", conversation_id=conv, error=problem)
            await asyncio.sleep(delay)

    async def _read_once(self, tracked: Tracked) -> None:
        ws, conv = tracked.key
        pending: list[tuple[int, ConversationEvent]] = []
        async for stream_seq, event in self.log.read(ws, conv, tracked.view.stream_seq):
            pending.append((stream_seq, event))
            if len(pending) >= 500:
                await self._apply_read(tracked, pending)
                pending = []
        await self._apply_read(tracked, pending)

    async def _apply_read(
        self, tracked: Tracked, events: list[tuple[int, ConversationEvent]]
    ) -> None:
        if tracked.loaded and self._subscribed(tracked.key):
            wanted = {a for _, e in events if (a := self._author(tracked, e)) is not None}
            missing = self.profiles.missing(tracked.key[0], wanted)
            if missing:
                await self.profiles.fetch(tracked.key[0], missing)
        for stream_seq, event in events:
            self._apply(tracked, event, stream_seq)

    def _lost(self, tracked: Tracked, exc: ConfabError | None) -> None:
        """The log cannot be read: its sockets go (4200) to resume elsewhere; the view
        is dropped and loaded again by the next subscriber."""
        ws, conv = tracked.key
        DOMAIN_EVENTS.labels("gap_lost").inc()
        log.warning(
            "conversation_events_unavailable",
            conversation_id=conv,
            error=exc.code if exc is not None else "internal",
        )
        if self.tracked.get(tracked.key) is tracked:
            del self.tracked[tracked.key]
        self.hub.send_away(
            ws,
            (realtime.conversation_channel(conv), realtime.presence_channel(conv)),
            "Events were missed here; reconnect and resume",
        )

    def _evict(self) -> None:
        """Forget views beyond ``max_idle`` that nobody here subscribes to, oldest first."""
        extra = len(self.tracked) - self.max_idle
        if extra <= 0:
            return
        for key in list(self.tracked):
            if extra <= 0:
                return
            tracked = self.tracked[key]
            ws, conv = key
            if tracked.busy is None and not any(
                self.channels.get(ws, n) is not None
                for n in (realtime.conversation_channel(conv), realtime.presence_channel(conv))
            ):
                del self.tracked[key]
                extra -= 1

    # -- a missed last event ------------------------------------------------------------

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self.recheck)
            try:
                await self.recheck_now()
            except (ConfabError, TimeoutError) as exc:
                log.warning("recheck_failed", error=str(exc))
            except Exception:
                log.exception("recheck_failed")

    async def recheck_now(self) -> int:
        """Ask the stream where the conversations worth checking stand; catch up those
        behind. How many were behind."""
        reconnects = int(self.nc.stats.get("reconnects", 0)) if self.nc is not None else 0
        everything = reconnects != self._reconnects  # live events may have been lost
        self._reconnects = reconnects
        since = time.monotonic() - self.recheck_window
        keys = [
            key
            for key, t in self.tracked.items()
            if t.loaded
            and t.busy is None
            and (everything or (t.touched >= since and self._subscribed(key)))
        ]
        behind = 0
        for start in range(0, len(keys), RECHECK_BATCH):
            lasts = await self.log.lasts(keys[start : start + RECHECK_BATCH])
            for key, last in lasts.items():
                tracked = self.tracked.get(key)
                if tracked is not None and last > tracked.view.stream_seq:
                    behind += 1
                    DOMAIN_EVENTS.labels("late").inc()
                    log.info(
                        "conversation_behind",
                        conversation_id=key[1],
                        have=tracked.view.stream_seq,
                        last=last,
                    )
                    tracked.want = max(tracked.want, last)
                    self._work(tracked)
        return behind

    # -- typing ---------------------------------------------------------------------------

    async def _on_typing(self, msg: Msg) -> None:
        parts = msg.subject.split(".")  # ephemeral.<workspace>.<conversation>.typing
        if len(parts) != 4:
            return
        name = realtime.conversation_channel(parts[2])
        if self.channels.get(parts[1], name) is None:
            return
        try:
            body = _typing.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("typing_unreadable", subject=msg.subject)
            return
        data = json_text(realtime.typing_payload(body.user_id, body.name, body.is_typing))
        self.hub.deliver_local(parts[1], (name,), realtime.USER_TYPING, data)
        DOMAIN_EVENTS.labels("typing").inc()
