"""``Idempotency-Key``: a POST sent again with the same key gets the first answer again.

Every POST of the tenant (``/api/v1``) and widget (``/api/widget``) APIs takes an
optional ``Idempotency-Key`` header: 1 to 255 printable ASCII characters (else
400). Keys are scoped per credential (an API key's id, or a session's user), so
two credentials never see each other's. The record is in a NATS KV bucket
(``CONFAB_GATEWAY_IDEMPOTENCY_BUCKET``, 24 h TTL) that every gateway copy shares:

1. Once the request has passed authentication, rate limits and validation, the
   gateway claims the key with a KV ``create``, which only one writer can win:
   of two concurrent duplicates only one runs.
2. The claim holds a fingerprint of the request (method, path, body; for a
   streamed multipart upload, its length instead of its bytes). A later request
   with the same key and another fingerprint is 422 ``invalid_request``; with
   the same fingerprint while the first is running, 409 ``conflict``.
3. The answer replaces the claim: a 2xx, or a 4xx that sending again would not
   change (not 408 or 429), is kept and replayed with its status and body (and
   ``Idempotent-Replayed: true``) for 24 h. A 5xx, or any failure, deletes the
   claim, so sending again runs the request again.
4. A claim older than ``STALE_AFTER`` with no answer (its gateway died mid-way)
   is taken over by the next request with the same key and fingerprint.

Without the header nothing here runs: no KV round trip on the ordinary path.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import msgspec
from aiohttp import web
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from confab import inbound
from confab.contracts.identity import ApiKeyPrincipal, SessionPrincipal, StaffPrincipal
from confab.errors import BadRequest, Conflict, InvalidRequest, Unavailable
from confab.logging import get_logger

log = get_logger("confab.gateway")

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
TTL_SECONDS = 24 * 3600
STALE_AFTER = 60.0  # seconds: longer than any request the gateway runs


class Record(msgspec.Struct, array_like=True, frozen=True):
    fingerprint: str
    claimed_at: float  # Unix time
    status: int = 0  # 0: still running
    body: bytes = b""


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Record).decode


@dataclass(frozen=True)
class Claim:
    name: str
    revision: int
    record: Record


def key_of(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key``, checked; None when it has none."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not inbound.token_ok(key, MAX_KEY_LENGTH):
        raise BadRequest(
            f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
            {HEADER: "malformed"},
        )
    return key


def scope_of(principal: ApiKeyPrincipal | SessionPrincipal | StaffPrincipal) -> str:
    if isinstance(principal, ApiKeyPrincipal):
        return f"key {principal.key_id}"
    return f"user {principal.workspace_id} {principal.user_id}"


async def fingerprint(request: web.Request) -> str:
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    if request.content_type.startswith("multipart/"):
        digest.update(f"multipart {request.content_length}".encode())  # streamed by its handler
    else:
        digest.update(await request.read())  # aiohttp keeps it for the handler
    return digest.hexdigest()


def stored(status: int) -> bool:
    """Answers worth replaying: success, and client errors that sending again would repeat."""
    return 200 <= status < 300 or (400 <= status < 500 and status not in (408, 429))


class Claims:
    """The shared record of keys: claim, answer, replay."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, replicas: int = 1) -> Claims:
        """The bucket, created if missing (one value per key, kept 24 h)."""
        try:
            return cls(await js.key_value(bucket))
        except (NotFoundError, BadRequestError):
            pass
        config = KeyValueConfig(
            bucket=bucket,
            history=1,
            ttl=TTL_SECONDS,
            storage=StorageType.FILE,
            replicas=replicas,
            description="Idempotency-Key answers of the gateway, kept 24 h",
        )
        try:
            return cls(await js.create_key_value(config))
        except BadRequestError:  # another gateway created it meanwhile
            return cls(await js.key_value(bucket))

    async def claim(self, scope: str, key: str, fingerprint: str) -> Claim | web.Response:
        """Claim the key for this request, or the answer to give instead (a replay)."""
        name = hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
        mine = Record(fingerprint=fingerprint, claimed_at=time.time())
        try:
            for _ in range(5):
                try:
                    return Claim(name, await self.kv.create(name, _encode(mine)), mine)
                except KeyWrongLastSequenceError:
                    pass
                try:
                    entry = await self.kv.get(name)
                except KeyNotFoundError:
                    continue  # answered with a 5xx and deleted meanwhile: claim again
                found = _decode(entry.value or b"")
                if found.fingerprint != fingerprint:
                    raise InvalidRequest(
                        f"This {HEADER} was used with a different request; use a new key.",
                        {HEADER: "used with a different request"},
                    )
                if found.status:
                    return _replay(found)
                if time.time() - found.claimed_at < STALE_AFTER:
                    break
                try:  # the gateway that claimed it died before answering: take it over
                    revision = await self.kv.update(name, _encode(mine), last=entry.revision)
                    return Claim(name, revision, mine)
                except KeyWrongLastSequenceError:
                    continue
        except NatsError as exc:
            log.warning("idempotency_unavailable", error=type(exc).__name__)
            raise Unavailable(
                f"Requests with an {HEADER} cannot be checked now; try again shortly.",
                retry_after=2,
            ) from None
        raise Conflict(
            f"A request with this {HEADER} is still running; "
            "send it again once it has finished to get its answer."
        )

    async def answer(self, claim: Claim, response: web.Response) -> None:
        """Keep the answer for replays, or give the key back if it is not worth keeping."""
        try:
            if stored(response.status):
                body = bytes(response.body) if isinstance(response.body, bytes) else b""
                done = msgspec.structs.replace(claim.record, status=response.status, body=body)
                await self.kv.update(claim.name, _encode(done), last=claim.revision)
            else:
                await self.kv.delete(claim.name, last=claim.revision)
        except NatsError as exc:
            # The answer still goes out; a repeat waits for the claim to go stale, then runs.
            log.warning("idempotency_answer_not_kept", error=type(exc).__name__)

    async def give_back(self, claim: Claim) -> None:
        try:
            await self.kv.delete(claim.name, last=claim.revision)
        except NatsError as exc:
            log.warning("idempotency_claim_not_released", error=type(exc).__name__)


def _replay(record: Record) -> web.Response:
    headers = {REPLAYED: "true"}
    if record.status == 204:
        return web.Response(status=204, headers=headers)
    return web.Response(
        status=record.status, body=record.body, content_type="application/json", headers=headers
    )
