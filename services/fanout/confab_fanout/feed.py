"""Domain events into channels: what each fanout node makes of the event log.

Every node core-subscribes to the stored conversation events as the
``CONVERSATIONS`` stream re-publishes them (``live.conv.evt.<ws>.<conv>``, with
``Nats-Sequence`` / ``Nats-Last-Sequence``) and to typing on core NATS
(``ephemeral.<ws>.<conv>.typing``), and delivers to its own sockets only
(``deliver_local``): every node receives every event, so ``publish`` would
deliver twice.

Payloads are rendered from the events themselves (``confab.realtime``), never
from messaging's read model, which lags the live event:

- ``message.created`` from ``message.posted`` and the sender's profile
  (``ProfileCache``), attachments with fresh URLs from media;
- ``message.updated`` from this node's copy of the message (a bounded LRU of the
  messages it rendered, kept current by edits, reactions, deletes and
  moderation); a message it has not seen is asked of messaging (``GetMessage``
  once the read model has this very event, so the answer already shows it);
- the small ones (``message.deleted``, ``reaction.*``, ``message.read``,
  ``participant.*``) straight from the event; ``conversation.created`` on each
  participant's ``private-user.{id}``; ``user.typing`` from the typing subject.

Only conversations with a subscriber on this node are rendered. A
conversation's events are delivered in order: while one waits for a lookup,
the ones after it wait behind it (and only those). A stored event this node
missed (``Nats-Last-Sequence`` is not the last sequence it saw on the subject,
e.g. after a NATS reconnect) is fetched from messaging (``ListEvents``) and
delivered before the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from confab import realtime
from confab.contracts.media import AttachmentList, GetAttachments
from confab.contracts.messaging import (
    Actor,
    Attachment,
    ConversationCreated,
    ConversationEvent,
    EventList,
    GetMessage,
    HistoryEvent,
    ListEvents,
    MessageDeleted,
    MessageEdited,
    MessageModerated,
    MessagePosted,
    MessageRecord,
    ParticipantAdded,
    ParticipantRemoved,
    ReactionAdded,
    ReactionRemoved,
    ReadMarked,
)
from confab.errors import ConfabError
from confab.events import H_EVENT, H_SCHEMA, UnknownEvent, decode_event
from confab.logging import get_logger
from confab.personal import KeyRing
from confab.realtime import Profile
from confab.rpc import RpcClient
from confab_fanout import protocol
from confab_fanout.metrics import DOMAIN_EVENTS
from confab_fanout.profiles import ProfileCache

if TYPE_CHECKING:
    from confab_fanout.fanout import Fanout

# Waits between attempts to fetch events this node missed, before giving up (~7.5 s).
GAP_RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0)

log = get_logger("confab.fanout.feed")

LIVE_CONVERSATIONS = "live.conv.evt.>"
TYPING = "ephemeral.*.*.typing"
H_SEQUENCE = "Nats-Sequence"
H_LAST_SEQUENCE = "Nats-Last-Sequence"
FANOUT_KEY_ID = "fanout"
LAST_SEEN_MAX = 100_000  # conversations whose last stream sequence is remembered
URL_MARGIN = 60.0  # attachment URLs this close to expiry are fetched again
RECORD_URL_TTL = 300.0  # how long URLs that came with a GetMessage reply are trusted

_json = msgspec.json.Encoder().encode


RENDERED = DOMAIN_EVENTS.labels("rendered")
SKIPPED = DOMAIN_EVENTS.labels("skipped")


def _deletes(event: ConversationEvent) -> bool:
    return isinstance(event, MessageDeleted) or (
        isinstance(event, MessageModerated) and event.action == "delete"
    )


def _restores(event: ConversationEvent) -> bool:
    return isinstance(event, MessageModerated) and event.action == "restore"


def internal_actor(workspace_id: str) -> Actor:
    """The fanout acting for the tenant: may read any conversation of the workspace."""
    return Actor(workspace_id=workspace_id, key_id=FANOUT_KEY_ID)


def json_text(value: Any) -> str:
    return _json(value).decode()


class Typing(msgspec.Struct, frozen=True):
    user_id: str
    name: str
    is_typing: bool


_typing = msgspec.json.Decoder(Typing)


class Cached:
    """A message as this node last rendered it: its row (``realtime.posted_row`` shape;
    ``content`` None: unknown, a restore asks again), its reactions in the order
    added, and its attachments with URLs until ``expires``."""

    __slots__ = ("attachments", "expires", "reactions", "row")

    def __init__(
        self,
        row: dict[str, Any],
        reactions: dict[tuple[str, str], None],
        attachments: dict[str, Attachment],
        expires: float,
    ) -> None:
        self.row = row
        self.reactions = reactions
        self.attachments = attachments
        self.expires = expires

    def urls_fresh(self, now: float) -> bool:
        return not self.row["attachment_ids"] or self.expires - URL_MARGIN > now

    @classmethod
    def from_record(cls, record: MessageRecord) -> Cached:
        m = record.message
        content = record.hidden_content if record.hidden else m.content
        row = {
            "id": m.id,
            "conversation_id": m.conversation_id,
            "seq": m.seq,
            "sender_id": m.sender.id if m.sender is not None else None,
            "content": content,
            "metadata": dict(m.metadata),
            "attachment_ids": list(record.attachment_ids) or [a.id for a in m.attachments],
            "reply_to": m.reply_to,
            "client_msg_id": m.client_msg_id,
            "created_at": m.created_at,
            "edited_at": m.edited_at,
            "deleted": m.deleted and not record.hidden,
            "hidden": record.hidden,
        }
        attachments = {a.id: a for a in m.attachments}
        reactions = dict.fromkeys(tuple(p) for p in record.reactions)
        # A hidden message came without its attachments: a restore asks media for them.
        expires = 0.0 if record.hidden else time.time() + RECORD_URL_TTL
        return cls(row, reactions, attachments, expires)


@dataclass(slots=True)
class Item:
    workspace_id: str
    conversation_id: str
    event: ConversationEvent
    stream_seq: int
    # This node missed stored events of the conversation before this one: deliver
    # those after this event seq first.
    gap_after: int | None = None


@dataclass(slots=True)
class Fetched:
    profiles: dict[str, Profile] = field(default_factory=dict)
    message: Cached | None = None  # from GetMessage: already shows the item's event
    attachments: tuple[dict[str, Attachment], float] | None = None
    missed: list[HistoryEvent] = field(default_factory=list)
    # The missed events could not be fetched: the channel's sockets must resume themselves.
    gap_lost: bool = False


class Feed:
    def __init__(
        self,
        fanout: Fanout,
        client: RpcClient,
        *,
        message_cache: int = 20_000,
        profile_cache: int = 50_000,
        keys: KeyRing | None = None,
    ) -> None:
        self.fanout = fanout
        self.channels = fanout.channels
        self.client = client
        # Reveals sealed message text (confab.personal); without it, it shows as erased.
        self.keys = keys
        self.profiles = ProfileCache(fanout.nc, client, profile_cache, keys=keys)
        self.message_cache = message_cache
        self.messages: OrderedDict[str, Cached] = OrderedDict()
        # conversation id -> items waiting behind one that needs a lookup
        self._pending: dict[tuple[str, str], deque[Item]] = {}
        # (workspace, conversation) -> (last stream sequence, last event seq) on its subject
        self._last: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        await self.profiles.start()
        nc = self.fanout.nc
        self._subs = [
            await nc.subscribe(LIVE_CONVERSATIONS, cb=self._on_event),
            await nc.subscribe(TYPING, cb=self._on_typing),
        ]

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs = []
        await self.profiles.stop()

    # -- intake ------------------------------------------------------------------------

    async def _on_event(self, msg: Msg) -> None:
        headers = msg.headers
        if not headers:
            return
        parts = msg.subject.split(".")
        if len(parts) != 5:  # live.conv.evt.<workspace>.<conversation>
            return
        workspace_id, conversation_id = parts[3], parts[4]
        try:
            stream_seq = int(headers.get(H_SEQUENCE) or 0)
            last_on_subject = int(headers.get(H_LAST_SEQUENCE) or 0)
            event = decode_event(headers[H_EVENT], int(headers.get(H_SCHEMA) or 1), msg.data)
        except (UnknownEvent, msgspec.DecodeError, KeyError, ValueError) as exc:
            log.warning("conversation_event_unreadable", subject=msg.subject, error=str(exc))
            return
        if not isinstance(event, ConversationEvent):
            return
        if self.keys is not None and getattr(event, "sealed", None):
            # Callbacks of one subscription run one after another: order is kept.
            event = await self.keys.reveal(workspace_id, event)
        self.take(workspace_id, conversation_id, event, stream_seq, last_on_subject)

    def take(
        self,
        workspace_id: str,
        conversation_id: str,
        event: ConversationEvent,
        stream_seq: int,
        last_on_subject: int,
    ) -> None:
        """One stored event, as the stream re-published it."""
        last = self._last
        key = (workspace_id, conversation_id)
        prev = last.get(key)
        gap_after = None
        if prev is not None:
            if stream_seq <= prev[0]:
                return  # seen already
            if last_on_subject != prev[0]:
                gap_after = prev[1]
                DOMAIN_EVENTS.labels("gap").inc()
                log.warning(
                    "conversation_events_missed",
                    conversation_id=conversation_id,
                    after_stream_seq=prev[0],
                    previous=last_on_subject,
                )
                self._forget_messages(conversation_id)
            last.move_to_end(key)
        last[key] = (stream_seq, event.seq or (prev[1] if prev else 0))
        if len(last) > LAST_SEEN_MAX:
            last.popitem(last=False)
        if not event.seq:
            return  # message.reported: the tenant's moderation record, nobody's real-time event
        self._submit(Item(workspace_id, conversation_id, event, stream_seq, gap_after))

    def _submit(self, item: Item) -> None:
        key = (item.workspace_id, item.conversation_id)
        queue = self._pending.get(key)
        if queue is not None:
            queue.append(item)
            return
        if not self._needs_lookup(item):
            self._render(item, None)
            return
        self._pending[key] = deque([item])
        self.fanout.spawn(self._drain(key))

    async def _drain(self, key: tuple[str, str]) -> None:
        queue = self._pending[key]
        try:
            while queue:
                item = queue[0]
                try:
                    fetched = await self._fetch(item) if self._needs_lookup(item) else None
                    self._render(item, fetched)
                except Exception:
                    log.exception("domain_event_failed", conversation_id=key[1])
                queue.popleft()
        finally:
            del self._pending[key]

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
        self.fanout.deliver_local(parts[1], (name,), realtime.USER_TYPING, data)
        DOMAIN_EVENTS.labels("typing").inc()

    # -- what an event needs ----------------------------------------------------------------

    def _subscribed(self, item: Item) -> bool:
        name = realtime.conversation_channel(item.conversation_id)
        return self.channels.get(item.workspace_id, name) is not None

    def _user_channels(self, item: Item, user_ids: Iterable[str]) -> list[str]:
        local = self.channels.of_app(item.workspace_id)
        names = (realtime.user_channel(u) for u in user_ids)
        return [n for n in names if n in local]

    def _cached(self, message_id: str) -> Cached | None:
        found = self.messages.get(message_id)
        if found is not None:
            self.messages.move_to_end(message_id)
        return found

    def _needs_lookup(self, item: Item) -> bool:
        event = item.event
        if isinstance(event, ConversationCreated):
            return bool(self._user_channels(item, event.participant_ids)) and bool(
                self.profiles.missing(item.workspace_id, event.participant_ids)
            )
        if not self._subscribed(item):
            return False
        if item.gap_after is not None:
            return True
        ws = item.workspace_id
        if isinstance(event, MessagePosted):
            return bool(event.attachment_ids) or bool(self.profiles.missing(ws, [event.sender_id]))
        if isinstance(event, MessageEdited | MessageDeleted | MessageModerated):
            cached = self._cached(event.message_id)
            if cached is None:
                return True
            if _deletes(event):
                return False
            if _restores(event) and cached.row["content"] is None:
                return True
            return bool(self.profiles.missing(ws, [cached.row["sender_id"]])) or (
                not cached.urls_fresh(time.time())
            )
        return False

    async def _fetch(self, item: Item) -> Fetched:
        """Whatever rendering ``item`` lacks; a lookup that fails leaves its part out."""
        event, ws = item.event, item.workspace_id
        fetched = Fetched()
        try:
            if item.gap_after is not None:
                missed = await self._missed_patiently(item)
                fetched.gap_lost = missed is None
                fetched.missed = missed or []
            if isinstance(event, ConversationCreated):
                fetched.profiles = await self.profiles.fetch(ws, event.participant_ids)
            elif isinstance(event, MessagePosted):
                if event.sender_id is not None:
                    fetched.profiles = await self.profiles.fetch(ws, [event.sender_id])
                if event.attachment_ids:
                    fetched.attachments = await self._attachments(item, event.attachment_ids, event)
            elif isinstance(event, MessageEdited | MessageDeleted | MessageModerated):
                cached = self._cached(event.message_id)
                if cached is None or (_restores(event) and cached.row["content"] is None):
                    record: MessageRecord = await self.client.call(
                        GetMessage(
                            actor=internal_actor(ws),
                            conversation_id=item.conversation_id,
                            message_id=event.message_id,
                            min_seq=item.stream_seq,
                        )
                    )
                    cached = fetched.message = Cached.from_record(record)
                sender_id = cached.row["sender_id"]
                if sender_id is not None:
                    fetched.profiles = await self.profiles.fetch(ws, [sender_id])
                if fetched.message is None and not cached.urls_fresh(time.time()):
                    fetched.attachments = await self._attachments(
                        item, cached.row["attachment_ids"], None
                    )
        except ConfabError as exc:
            DOMAIN_EVENTS.labels("lookup_failed").inc()
            log.warning(
                "domain_event_lookup_failed",
                conversation_id=item.conversation_id,
                event=type(event).__name__,
                error=exc.code,
            )
        return fetched

    async def _attachments(
        self, item: Item, ids: list[str], posted: MessagePosted | None
    ) -> tuple[dict[str, Attachment], float]:
        try:
            found: AttachmentList = await self.client.call(
                GetAttachments(
                    workspace_id=item.workspace_id,
                    attachment_ids=list(ids),
                    conversation_id=item.conversation_id,
                )
            )
        except ConfabError as exc:
            log.warning("attachment_lookup_failed", error=exc.code)
            # Shown without URLs rather than not at all; asked again next time.
            return {a.id: a for a in (posted.attachments if posted else [])}, 0.0
        expires = min(
            (a.expires_at.timestamp() for a in found.data),
            default=time.time() + RECORD_URL_TTL,
        )
        return {a.attachment.id: a.attachment for a in found.data}, expires

    async def _missed_patiently(self, item: Item) -> list[HistoryEvent] | None:
        """``_missed``, tried again for a while (messaging may be catching up); None if it
        never answered. The conversation's later events wait meanwhile, so order holds."""
        for delay in (*GAP_RETRY_DELAYS, None):
            try:
                return await self._missed(item)
            except ConfabError as exc:
                if delay is None:
                    DOMAIN_EVENTS.labels("gap_lost").inc()
                    log.warning(
                        "missed_events_unavailable",
                        conversation_id=item.conversation_id,
                        error=exc.code,
                    )
                    return None
                await asyncio.sleep(delay)
        return None

    async def _missed(self, item: Item) -> list[HistoryEvent]:
        """The stored events between the last this node saw and ``item`` (a gap)."""
        assert item.gap_after is not None
        after, out = item.gap_after, []
        while after + 1 < item.event.seq:
            page: EventList = await self.client.call(
                ListEvents(
                    actor=internal_actor(item.workspace_id),
                    conversation_id=item.conversation_id,
                    after=after,
                    limit=100,
                )
            )
            out += [e for e in page.data if e.seq < item.event.seq]
            if not page.data or not page.has_more:
                break
            after = page.data[-1].seq
        return out

    # -- rendering and delivery ---------------------------------------------------------------

    def _profile(self, ws: str, user_id: str | None, fetched: Fetched | None) -> Profile | None:
        if user_id is None:
            return None
        if fetched is not None and user_id in fetched.profiles:
            return fetched.profiles[user_id]
        return self.profiles.get(ws, user_id)

    def _put(self, message_id: str, cached: Cached) -> None:
        self.messages[message_id] = cached
        self.messages.move_to_end(message_id)
        if len(self.messages) > self.message_cache:
            self.messages.popitem(last=False)

    def _forget_messages(self, conversation_id: str) -> None:
        """After missed events: this node's copies of the conversation may be stale."""
        stale = [k for k, c in self.messages.items() if c.row["conversation_id"] == conversation_id]
        for key in stale:
            del self.messages[key]

    def _message_data(
        self, ws: str, cached: Cached, event_seq: int, fetched: Fetched | None
    ) -> str:
        if fetched is not None and fetched.attachments is not None:
            cached.attachments, cached.expires = fetched.attachments
        row = cached.row
        author = realtime.sender(row["sender_id"], self._profile(ws, row["sender_id"], fetched))
        if row["content"] is None:  # hidden, content unknown: shown as the tombstone it is
            row = {**row, "content": ""}
        message = realtime.message(row, cached.reactions, None, author, cached.attachments)
        return json_text(realtime.message_payload(message, event_seq))

    def _render(self, item: Item, fetched: Fetched | None) -> None:
        event, ws = item.event, item.workspace_id
        name = realtime.conversation_channel(item.conversation_id)
        subscribed = self.channels.get(ws, name) is not None
        if fetched is not None and fetched.gap_lost and subscribed:
            self._send_away(ws, name)
            subscribed = self.channels.get(ws, name) is not None
        if fetched is not None and fetched.missed and subscribed:
            self._deliver_missed(ws, name, fetched.missed)
        deliver = self.fanout.deliver_seq
        seq = event.seq
        (RENDERED if subscribed else SKIPPED).inc()
        match event:
            case MessagePosted():
                if not subscribed:
                    return
                cached = Cached(realtime.posted_row(event, item.stream_seq), {}, {}, 0.0)
                if not event.attachment_ids:
                    cached.expires = float("inf")
                self._put(event.message_id, cached)
                data = self._message_data(ws, cached, seq, fetched)
                deliver(ws, name, realtime.MESSAGE_CREATED, data, seq)
            case MessageEdited() | MessageModerated() | MessageDeleted():
                self._changed(item, name, subscribed, fetched)
            case ReactionAdded() | ReactionRemoved():
                cached = self._cached(event.message_id)
                added = isinstance(event, ReactionAdded)
                if cached is not None:
                    key = (event.emoji, event.user_id)
                    if added:
                        cached.reactions[key] = None
                    else:
                        cached.reactions.pop(key, None)
                if subscribed:
                    data = json_text(
                        realtime.reaction_payload(event.message_id, event.emoji, event.user_id, seq)
                    )
                    deliver(
                        ws,
                        name,
                        realtime.REACTION_ADDED if added else realtime.REACTION_REMOVED,
                        data,
                        seq,
                    )
            case ReadMarked():
                if subscribed:
                    data = json_text(
                        realtime.read_payload(event.user_id, event.up_to, event.at, seq)
                    )
                    deliver(ws, name, realtime.MESSAGE_READ, data, seq)
            case ParticipantAdded() | ParticipantRemoved():
                added = isinstance(event, ParticipantAdded)
                if subscribed:
                    data = json_text(realtime.participant_payload(event.user_id, seq))
                    deliver(
                        ws,
                        name,
                        realtime.PARTICIPANT_ADDED if added else realtime.PARTICIPANT_REMOVED,
                        data,
                        seq,
                    )
                if not added:  # they see that they left, and no more
                    self.fanout.let_go(
                        ws,
                        (name, realtime.presence_channel(item.conversation_id)),
                        event.user_id,
                        "No longer a participant of this conversation.",
                    )
            case ConversationCreated():
                channels = self._user_channels(item, event.participant_ids)
                if channels:
                    profiles = {
                        u: p
                        for u in event.participant_ids
                        if (p := self._profile(ws, u, fetched)) is not None
                    }
                    conversation = realtime.created_conversation(event, profiles)
                    data = json_text(realtime.conversation_payload(conversation, seq))
                    self.fanout.deliver_local(ws, channels, realtime.CONVERSATION_CREATED, data)

    def _changed(self, item: Item, name: str, subscribed: bool, fetched: Fetched | None) -> None:
        """An edit, a delete or a moderation of a message: this node's copy follows it."""
        event = item.event
        assert isinstance(event, MessageEdited | MessageDeleted | MessageModerated)
        ws, seq = item.workspace_id, event.seq
        if fetched is not None and fetched.message is not None:
            cached: Cached | None = fetched.message  # shows this event already
            self._put(event.message_id, fetched.message)
        else:
            cached = self._cached(event.message_id)
            if cached is not None:
                row = cached.row
                if isinstance(event, MessageEdited):
                    row["content"] = event.content
                    row["edited_at"] = event.at
                elif _deletes(event):
                    row["deleted"] = True
                else:
                    row["hidden"] = event.action == "hide"
        if not subscribed:
            return
        if cached is None:
            DOMAIN_EVENTS.labels("dropped").inc()
            log.warning("message_unknown", message_id=event.message_id, event_seq=seq)
            return
        if _deletes(event):
            data = json_text(realtime.deleted_payload(event.message_id, cached.row["seq"], seq))
            self.fanout.deliver_seq(ws, name, realtime.MESSAGE_DELETED, data, seq)
        else:
            data = self._message_data(ws, cached, seq, fetched)
            self.fanout.deliver_seq(ws, name, realtime.MESSAGE_UPDATED, data, seq)

    def _send_away(self, ws: str, name: str) -> None:
        """Events of the channel are missing here: close its sockets with 4200, so their
        clients reconnect and resume from their own last seq, rather than skip them."""
        channel = self.channels.get(ws, name)
        for sock in list(channel.sockets) if channel is not None else ():
            self.fanout.spawn(
                sock.close(protocol.RECONNECT, "Events were missed here; reconnect and resume")
            )

    def _deliver_missed(self, ws: str, name: str, missed: list[HistoryEvent]) -> None:
        channel = self.channels.get(ws, name)
        for e in missed:
            if (
                channel is None
                or e.seq <= channel.last_seq
                or e.event == realtime.CONVERSATION_CREATED
            ):
                continue
            self.fanout.deliver_seq(ws, name, e.event, json_text(e.data), e.seq)
