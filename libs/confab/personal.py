"""Personal data in events, sealed with a per-user key that lives outside the log.

An event type with personal fields names them in ``personal`` and the field
holding their owner's user id in ``owner``. Before such an event is appended
its personal fields are encrypted together (AES-256-GCM) into ``sealed`` and
blanked; readers ``reveal`` them with the owner's key. The keys live in the
NATS KV bucket ``CONFAB_KEYS`` (one value per user, no history). Erasing a
user purges the key, which leaves a tombstone: from then on every replay,
export and rebuilt read model sees the fields as erased (blank), and no key
is ever made for that user again.

Threat model: this protects erased users against copies of the event log —
stream files, replicas, exports, and read models rebuilt from them — made or
kept after the erasure. It does not protect against someone who holds the key
bucket as well as the log (a live deployment, or a backup of both taken
before the erasure), and it does not reach data that already left Confab
(webhook deliveries, clients' caches). Ids, timestamps and who talked to whom
are not personal fields here and stay readable.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from confab.bus import StreamSpec
from confab.contracts.events import Event
from confab.errors import NotFound
from confab.events import Envelope

BUCKET = "CONFAB_KEYS"
STREAM = f"KV_{BUCKET}"
SUBJECTS = f"$KV.{BUCKET}.>"
# For export and import, which move the keys (and erased users' tombstones) with the log.
KEYS = StreamSpec(STREAM, (SUBJECTS,))
PREFIX = "v1."  # the format of ``sealed``: v1.<base64url(nonce | ciphertext+tag)>
CACHE_SIZE = 100_000

E = TypeVar("E", bound=Event)

_ENCODE = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder(dict[str, Any])


class Erased(NotFound):
    """The user's key was erased: nothing may be sealed for them any more."""

    def __init__(self) -> None:
        super().__init__("User not found.", {"user_id": "this user was erased"})


def is_sealable(event: Event) -> bool:
    return bool(event.personal) and getattr(event, event.owner, None) is not None


def _blank(value: Any) -> Any:
    if isinstance(value, str):
        return ""
    if isinstance(value, dict):
        return {}
    if isinstance(value, list):
        return []
    return None


def seal_with(key: AESGCM, event: E) -> E:
    """``event`` with its personal fields encrypted into ``sealed`` and blanked."""
    owner = getattr(event, event.owner)
    fields = {name: getattr(event, name) for name in event.personal}
    nonce = os.urandom(12)
    box = key.encrypt(nonce, _ENCODE.encode(fields), owner.encode())
    sealed = PREFIX + base64.urlsafe_b64encode(nonce + box).decode()
    blanks = {name: _blank(value) for name, value in fields.items()}
    return msgspec.structs.replace(event, sealed=sealed, **blanks)  # type: ignore[type-var]


def reveal_with(key: AESGCM | None, event: E) -> E:
    """``event`` with its personal fields back, or left blank if the key is gone."""
    sealed: str | None = getattr(event, "sealed", None)
    if not sealed:
        return event
    if key is None or not sealed.startswith(PREFIX):
        return msgspec.structs.replace(event, sealed=None)  # type: ignore[type-var]
    raw = base64.urlsafe_b64decode(sealed[len(PREFIX) :])
    owner = getattr(event, event.owner)
    try:
        fields = _DECODE.decode(key.decrypt(raw[:12], raw[12:], owner.encode()))
    except (InvalidTag, ValueError):
        return msgspec.structs.replace(event, sealed=None)  # type: ignore[type-var]
    known = {k: v for k, v in fields.items() if k in event.personal}
    return msgspec.structs.replace(event, sealed=None, **known)  # type: ignore[type-var]


def key_name(workspace: str, user_id: str) -> str:
    return f"{workspace}.{user_id}"


class KeyRing:
    """Users' data keys: fetched once, cached, forgotten everywhere when a user is erased.

    Every process with a ring listens on the bucket's subjects, so a purge
    anywhere drops the key from every cache at once.
    """

    def __init__(self, nc: NATS, js: JetStreamContext, *, replicas: int = 1) -> None:
        self.nc = nc
        self.js = js
        self.replicas = replicas
        self._kv: KeyValue | None = None
        # Ciphers ready to use (making one per message costs more than the encryption).
        self._cache: OrderedDict[str, AESGCM | None] = OrderedDict()  # None: erased
        self._sub: Any = None

    async def open(self) -> KeyRing:
        self._kv = await ensure_bucket(self.js, self.replicas)
        self._sub = await self.nc.subscribe(SUBJECTS, cb=self._on_change)
        return self

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("KeyRing.open() was not awaited")
        return self._kv

    async def _on_change(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get(KV_OP) in (KV_DEL, KV_PURGE):
            self._remember(msg.subject.removeprefix(f"$KV.{BUCKET}."), None)

    def _remember(self, name: str, key: AESGCM | None) -> None:
        self._cache[name] = key
        self._cache.move_to_end(name)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    async def key(self, workspace: str, user_id: str, *, create: bool = False) -> AESGCM | None:
        """The user's key; None if erased or (without ``create``) never made."""
        name = key_name(workspace, user_id)
        if name in self._cache:
            return self._cache[name]
        try:
            entry = await self.kv.get(name)
        except KeyNotFoundError as exc:
            # nats-py turns "deleted" into "not found" and keeps the operation.
            if getattr(exc, "op", None) in (KV_DEL, KV_PURGE):
                self._remember(name, None)
                return None
            if not create:
                return None
            return await self._create(name)
        assert entry.value is not None
        cipher = AESGCM(entry.value)
        self._remember(name, cipher)
        return cipher

    async def _create(self, name: str) -> AESGCM | None:
        fresh = AESGCM.generate_key(bit_length=256)
        try:
            # Expecting "no message on this subject": a tombstone makes it fail too,
            # so an erased user never gets a new key.
            await self.kv.update(name, fresh, last=0)
        except KeyWrongLastSequenceError:
            try:
                entry = await self.kv.get(name)
            except KeyNotFoundError:
                self._remember(name, None)
                return None
            fresh = entry.value or b""
        cipher = AESGCM(fresh)
        self._remember(name, cipher)
        return cipher

    def forget(self, workspace: str, user_id: str) -> None:
        """The user was erased (their ``user.erased`` event was seen): never use the key again."""
        self._remember(key_name(workspace, user_id), None)

    async def erase(self, workspace: str, user_id: str) -> None:
        """Purge the user's key for good (idempotent)."""
        name = key_name(workspace, user_id)
        await self.kv.purge(name)
        self._remember(name, None)

    async def seal(self, workspace: str, event: E) -> E:
        """``event`` ready for the log; raises ``Erased`` if its owner was erased."""
        if not is_sealable(event):
            return event
        key = await self.key(workspace, getattr(event, event.owner), create=True)
        if key is None:
            raise Erased()
        return seal_with(key, event)

    async def reveal(self, workspace: str, event: E) -> E:
        if not getattr(event, "sealed", None):
            return event
        return reveal_with(await self.key(workspace, getattr(event, event.owner)), event)

    async def reveal_all(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """The envelopes with their events revealed; keys not cached are fetched concurrently."""
        wanted = {
            (e.workspace, getattr(e.event, e.event.owner))
            for e in envelopes
            if getattr(e.event, "sealed", None)
        }
        if not wanted:
            return list(envelopes)
        missing = [w for w in wanted if key_name(*w) not in self._cache]
        for start in range(0, len(missing), 64):
            await asyncio.gather(*(self.key(*w) for w in missing[start : start + 64]))
        out = []
        for e in envelopes:
            if getattr(e.event, "sealed", None):
                owner = getattr(e.event, e.event.owner)
                key = self._cache.get(key_name(e.workspace, owner))
                e = msgspec.structs.replace(e, event=reveal_with(key, e.event))
            out.append(e)
        return out


async def ensure_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    """The key bucket, created if missing: one value per key, purges leave tombstones."""
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=BUCKET,
                history=1,
                storage=StorageType.FILE,
                replicas=replicas,
                description="Per-user data keys; purging one erases the user's data in the log",
            )
        )
