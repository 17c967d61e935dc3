"""Payloads rendered when they are sent, from the log as it is then.

A delivery row names an event by its place in the log; its body is made at each
attempt, so what a receiver gets is what the log means at that moment:

- conversation events through the one fold (``confab.conversation``): this process
  keeps a ``ConversationView`` of each conversation it delivers for (a bounded LRU),
  loaded from the log itself (``read_subject``) and kept current by the intake, which
  folds every event of its partitions into the views it holds. A message deleted or
  hidden before a retry goes out as its tombstone, an edited one with its current
  text, an erased user's blank (``erase``, applied by the authority follower before
  identity's erasure returns);
- users and attachments by folding their (short) subjects from the log at render time,
  personal fields revealed with the owner's key: once a user is erased, their key is
  gone and so is their profile in every payload made afterwards.

A user's profile (a message's sender, a new conversation's participants) is cached and
marked stale by identity's stored user events (``live.identity.evt.*.user.*``); a stale
one is read again from the log before it is used.

A conversation event's body is the same for every endpoint that gets it, so it is kept
(``_bodies``, by conversation) while nothing it is made from can have changed: every
change to the views and profiles held here starts a new *generation* (a body rendered
across one is not kept) and drops the kept bodies it can touch: a fold or a read from
the log those of its conversation, a profile (stale or erased) every one, since names
appear in any conversation's bodies. Three endpoints of one workspace cost one
rendering, never a stale one.

The sender asks ``now`` first: the kept body, or one made at once from the view and
profiles held (no task, no I/O). Only what is not held (a view behind the event, a
stale or unknown profile) takes ``body``, which reads it from the log. Both make the
payload with the same functions (``_needs``, ``_conversation_data``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from confab import conversation, realtime
from confab.bus import CONVERSATIONS, IDENTITY, MEDIA, NOTIFIER
from confab.contracts.events.identity import UserBanned, UserErased, UserUnbanned, UserUpserted
from confab.contracts.events.identity import subject as identity_subject
from confab.contracts.events.media import AttachmentDeleted, AttachmentStored
from confab.contracts.events.media import subject as media_subject
from confab.contracts.events.messaging import ConversationEvent, MessagePosted
from confab.contracts.events.messaging import subject as conversation_subject
from confab.contracts.webhooks import PAYLOAD_VERSION
from confab.conversation import ConversationView, Entry
from confab.eventlog import read_subject
from confab.events import Envelope
from confab.personal import KeyRing

_encode = msgspec.json.Encoder().encode
MAX_BODIES = 4096  # bodies kept within one generation
Key = tuple[str, str]  # (workspace, id)


def message_id_of(stream: str, seq: int) -> str:
    """The ``webhook-id`` of an event: one per place in the log, the same for every
    attempt and every endpoint."""
    return f"msg_{stream.lower()}_{seq}"


class UserView(msgspec.Struct, kw_only=True):
    """One user as the log has it now (``user.*`` payloads and profiles)."""

    id: str
    external_id: str = ""
    name: str = ""
    email: str | None = None
    avatar_url: str | None = None
    metadata: dict[str, Any] = {}
    banned: bool = False
    erased: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    stream_seq: int = 0

    def fold(self, event: Any, stream_seq: int) -> None:
        if isinstance(event, UserUpserted):
            self.external_id = event.external_id
            self.name, self.email = event.name, event.email
            self.avatar_url, self.metadata = event.avatar_url, dict(event.metadata)
            self.created_at = self.created_at or event.at
            self.updated_at = event.at
        elif isinstance(event, UserBanned | UserUnbanned):
            self.banned = isinstance(event, UserBanned)
            self.updated_at = event.at
        elif isinstance(event, UserErased):
            self.erase()
            self.updated_at = event.at
        self.stream_seq = stream_seq

    def erase(self) -> None:
        self.erased = True
        self.name, self.email, self.avatar_url, self.metadata = "", None, None, {}

    @property
    def shown_name(self) -> str:
        return realtime.ERASED_NAME if self.erased else self.name

    # realtime.ProfileLike
    @property
    def profile(self) -> realtime.Profile:
        if self.erased or self.created_at is None:
            return realtime.ERASED
        return realtime.Profile(self.name, self.avatar_url)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "external_id": self.external_id,
            "name": self.shown_name,
            "email": self.email,
            "avatar_url": self.avatar_url,
            "metadata": self.metadata,
            "banned": self.banned,
            "erased": self.erased,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class Renderer:
    def __init__(self, nc: NATS, keys: KeyRing | None, *, views: int = 10_000) -> None:
        self.nc = nc
        self.keys = keys
        self.size = views
        self.views: OrderedDict[Key, ConversationView] = OrderedDict()
        self.users: OrderedDict[Key, UserView] = OrderedDict()
        self.stale: set[Key] = set()
        self.erased: set[Key] = set()  # users erased while this process ran
        self._loading: dict[Key, asyncio.Lock] = {}
        self._sub: Any = None
        # Conversation events' bodies, by conversation and stream seq; how many in all.
        self._bodies: dict[Key, dict[int, bytes | None]] = {}
        self._kept = 0
        self.generation = 0  # moves on every change to what a body is made from

    def _changed(self, conversations: Iterable[Key] | None = None) -> None:
        """What bodies are made from changed: of ``conversations`` only, or (None) of any."""
        self.generation += 1
        if conversations is None:
            self._bodies.clear()
            self._kept = 0
            return
        for key in conversations:
            dropped = self._bodies.pop(key, None)
            if dropped:
                self._kept -= len(dropped)

    async def start(self) -> None:
        self._sub = await self.nc.subscribe("live.identity.evt.*.user.*", cb=self._on_user)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_user(self, msg: Msg) -> None:
        parts = msg.subject.split(".")  # live.identity.evt.<ws>.user.<id>
        if len(parts) == 6:
            self.stale.add((parts[3], parts[5]))
            self._changed()

    # -- conversations -------------------------------------------------------------------

    async def take(self, envelopes: Sequence[Envelope]) -> dict[int, Entry]:
        """Fold stored conversation events into the views held (the intake calls this with
        every event of its partitions, in stream order); the timeline entries they made,
        by stream seq (the intake classifies by them)."""
        held = [
            e
            for e in envelopes
            if isinstance(e.event, ConversationEvent)
            and (e.workspace, e.event.conversation_id) in self.views
        ]
        entries: dict[int, Entry] = {}
        if not held:
            return entries
        folded = {(e.workspace, cast(ConversationEvent, e.event).conversation_id) for e in held}
        self._changed(folded)
        if self.keys is not None:
            held = await self.keys.reveal_all(held)
        for envelope in held:
            event = envelope.event
            assert isinstance(event, ConversationEvent)
            key = (envelope.workspace, event.conversation_id)
            view = self.views.get(key)
            if view is None or not event.seq or event.seq <= view.last_seq:
                continue  # a report (no seq), or folded already
            if event.seq > view.last_seq + 1:
                # Events were not followed here meanwhile: read it again from the log.
                if key not in self._loading:
                    del self.views[key]
                continue
            entry = self._fold(view, event, envelope.seq)
            if entry is not None:
                entries[envelope.seq] = entry
        return entries

    def _fold(
        self, view: ConversationView, event: ConversationEvent, stream_seq: int
    ) -> Entry | None:
        entry = conversation.evolve(view, event, stream_seq)
        if (
            entry is not None
            and isinstance(event, MessagePosted)
            and (view.workspace_id, event.sender_id) in self.erased
        ):
            conversation.blank(view.messages[event.message_id])
        return entry

    async def conversation(self, ws: str, conv: str, at_least: int) -> ConversationView:
        """The conversation with at least every event up to stream sequence ``at_least``."""
        key = (ws, conv)
        view = self.views.get(key)
        if view is not None:
            self.views.move_to_end(key)
            if view.stream_seq >= at_least:
                return view
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:
            view = self.views.get(key)
            if view is None:
                view = ConversationView(conv, ws)
            if view.stream_seq < at_least:
                self._changed([key])
                subject = conversation_subject(ws, conv)
                async for envelope in read_subject(
                    self.nc, CONVERSATIONS.name, subject, view.stream_seq
                ):
                    event = envelope.event
                    if not isinstance(event, ConversationEvent):
                        continue
                    if self.keys is not None and getattr(event, "sealed", None):
                        event = await self.keys.reveal(ws, event)
                    self._fold(view, event, envelope.seq)
            self.views[key] = view
            self.views.move_to_end(key)
            while len(self.views) > self.size:
                gone, _ = self.views.popitem(last=False)
                self._changed([gone])  # its events are no longer folded here
        self._loading.pop(key, None)
        return view

    def erase(self, ws: str, user_id: str) -> None:
        """The user was erased: blank their messages in every view, forget their profile."""
        self._changed()
        self.erased.add((ws, user_id))
        if self.keys is not None:
            self.keys.forget(ws, user_id)
        for (view_ws, _), view in self.views.items():
            if view_ws == ws:
                conversation.erase(view, user_id)
        user = self.users.get((ws, user_id))
        if user is not None:
            user.erase()

    # -- users and attachments -----------------------------------------------------------

    async def user(self, ws: str, user_id: str, at_least: int = 0) -> UserView:
        key = (ws, user_id)
        view = self.users.get(key)
        if view is None:
            view = UserView(id=user_id)
        elif view.stream_seq >= at_least and key not in self.stale:
            self.users.move_to_end(key)
            return view
        self.stale.discard(key)
        self._changed()
        subject = identity_subject(ws, "user", user_id)
        async for envelope in read_subject(self.nc, IDENTITY.name, subject, view.stream_seq):
            event = envelope.event
            if self.keys is not None and getattr(event, "sealed", None):
                event = await self.keys.reveal(ws, event)
            view.fold(event, envelope.seq)
        if key in self.erased:
            view.erase()
        self.users[key] = view
        self.users.move_to_end(key)
        while len(self.users) > self.size:
            self.users.popitem(last=False)
        return view

    async def attachment(self, ws: str, attachment_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = None
        subject = media_subject(ws, attachment_id)
        async for envelope in read_subject(self.nc, MEDIA.name, subject):
            event = envelope.event
            if isinstance(event, AttachmentStored):
                found = {
                    "id": event.attachment_id,
                    "conversation_id": event.conversation_id,
                    "uploader_id": event.uploader_id,
                    "filename": event.filename,
                    "content_type": event.content_type,
                    "size": event.size,
                    "width": event.width,
                    "height": event.height,
                    "created_at": event.at,
                    "deleted": False,
                }
            elif isinstance(event, AttachmentDeleted) and found is not None:
                found["deleted"] = True
        return found

    # -- payloads --------------------------------------------------------------------------

    def now(self, row: dict[str, Any]) -> bytes | None:
        """A conversation event's body made without reading the log, if it can be: the
        one kept for another endpoint, or one made now from the view and profiles held
        (kept in turn). None if it cannot: ``body`` then reads what it needs (or says the
        event cannot be rendered). The sender calls this first, so the usual attempt
        takes no task."""
        if row["stream"] != CONVERSATIONS.name:
            return None
        ws, seq = row["workspace_id"], row["seq"]
        key = (ws, row["conversation_id"])
        kept = self._bodies.get(key)
        if kept is not None and seq in kept:
            return kept[seq]
        view = self.views.get(key)
        if view is None or view.stream_seq < seq or key in self._loading:
            return None
        entry, authors = _needs(row, view)
        users: dict[str, UserView] = {}
        for user_id in authors:
            user = self.users.get((ws, user_id))
            if user is None or (ws, user_id) in self.stale:
                return None
            users[user_id] = user
        data = _conversation_data(row, view, entry, users)
        if data is None:
            return None
        self.views.move_to_end(key)
        for user_id in users:
            self.users.move_to_end((ws, user_id))
        body = _envelope(row, data)
        self._keep(key, seq, body)
        return body

    async def body(self, row: dict[str, Any]) -> bytes | None:
        """The JSON body of a delivery, rendered now; None if the event cannot be rendered
        (what it names is not in the log)."""
        if row["stream"] != CONVERSATIONS.name:
            return await self._render(row)
        key = (row["workspace_id"], row["conversation_id"])
        seq, generation = row["seq"], self.generation
        kept = self._bodies.get(key)
        if kept is not None and seq in kept:
            return kept[seq]
        body = await self._render(row)
        if generation == self.generation:
            self._keep(key, seq, body)  # nothing changed while it was made
        return body

    def _keep(self, key: Key, seq: int, body: bytes | None) -> None:
        if self._kept < MAX_BODIES:
            self._bodies.setdefault(key, {})[seq] = body
            self._kept += 1

    async def _render(self, row: dict[str, Any]) -> bytes | None:
        data = await self._data(row)
        return None if data is None else _envelope(row, data)

    async def _data(self, row: dict[str, Any]) -> dict[str, Any] | None:
        ws, ref = row["workspace_id"], row["ref"]
        if row["stream"] == IDENTITY.name:
            return (await self.user(ws, row["lane"], row["seq"])).public()
        if row["stream"] == MEDIA.name:
            return await self.attachment(ws, row["lane"])
        if row["stream"] == NOTIFIER.name:
            return dict(ref)  # the decision itself: ids and counts
        view = await self.conversation(ws, row["conversation_id"], row["seq"])
        entry, authors = _needs(row, view)
        users: dict[str, UserView] = {}
        # The view may change while profiles are read: until it names no one unread.
        while missing := [u for u in authors if u not in users]:
            for user in await asyncio.gather(*(self.user(ws, u) for u in missing)):
                users[user.id] = user
            entry, authors = _needs(row, view)
        return _conversation_data(row, view, entry, users)

    def ping(self, workspace_id: str, endpoint_id: str, message_id: str, now: datetime) -> bytes:
        return _encode(
            {
                "type": "webhook.ping",
                "version": PAYLOAD_VERSION,
                "id": message_id,
                "timestamp": now,
                "workspace_id": workspace_id,
                "data": {"webhook_id": endpoint_id},
            }
        )


# -- conversation payloads, from a view and the profiles they show --------------------------


def _envelope(row: dict[str, Any], data: dict[str, Any]) -> bytes:
    envelope: dict[str, Any] = {
        "type": row["event_type"],
        "version": PAYLOAD_VERSION,
        "id": message_id_of(row["stream"], row["seq"]),
        "timestamp": row["stored_at"],
        "workspace_id": row["workspace_id"],
        "log": {"stream": row["stream"], "seq": row["seq"]},
    }
    if row["conversation_id"] is not None:
        envelope["conversation_id"] = row["conversation_id"]
        envelope["event_seq"] = row["event_seq"]
    envelope["data"] = data
    return _encode(envelope)


def _needs(row: dict[str, Any], view: ConversationView) -> tuple[Entry | None, list[str]]:
    """What a conversation event's payload is made from besides the view: its timeline
    entry (none for a report, which names a message), and the users whose profiles it
    shows (the message's sender, or a new conversation's participants)."""
    ref = row["ref"]
    if row["event_type"] == "message.reported":
        message = view.messages.get(ref["message_id"])
        sender = message.sender_id if message is not None else None
        return None, [] if sender is None else [sender]
    at = msgspec.convert(ref["at"], datetime)
    data = {k: v for k, v in ref.items() if k != "at"}
    entry = Entry(row["event_seq"] or 0, row["seq"], row["event_type"], at, data)
    if entry.name == realtime.CONVERSATION_CREATED:
        return entry, [p["id"] for p in data.get("participants", ())]
    if entry.name == realtime.MESSAGE_DELETED or entry.message_id is None:
        return entry, []
    message = view.messages.get(entry.message_id)
    sender = message.sender_id if message is not None else None
    return entry, [] if sender is None else [sender]


def _conversation_data(
    row: dict[str, Any],
    view: ConversationView,
    entry: Entry | None,
    users: dict[str, UserView],
) -> dict[str, Any] | None:
    """A conversation event's ``data`` as the view has it now (``_needs`` says from what)."""
    if entry is None:  # a report
        ref = row["ref"]
        shown = (
            _message(view, ref["message_id"], users) if ref["message_id"] in view.messages else None
        )
        return {**ref, "message": shown}
    data = entry.data
    if entry.name == realtime.CONVERSATION_CREATED:
        profiles = {u.id: u.profile for u in users.values()}
        return conversation.created_payload(view, entry, profiles)
    if entry.name == realtime.MESSAGE_DELETED:
        message = view.messages.get(data["id"])
        if message is not None:
            data["seq"] = message.seq
        return {**data, "event_seq": entry.seq}
    message_id = entry.message_id
    if message_id is None:
        return conversation.payload(entry, None, None, conversation=view)
    if message_id not in view.messages:
        return None
    return _message(view, message_id, users, entry)


def _message(
    view: ConversationView,
    message_id: str,
    users: dict[str, UserView],
    entry: Entry | None = None,
) -> dict[str, Any] | None:
    message = view.messages[message_id]
    author = None
    if message.sender_id is not None:
        author = realtime.sender(message.sender_id, users[message.sender_id].profile)
    if entry is None:
        return msgspec.to_builtins(conversation.message_object(message, None, author))
    return conversation.payload(entry, message, author)
