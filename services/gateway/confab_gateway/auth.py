"""Who is calling: admin token, tenant API key, widget session token, or a staff member's
dashboard session (the cookie of ``confab_gateway.sessions``).

Verified credentials are cached briefly (keyed by their hash, never the secret
itself) so the hot path costs no round trip to identity. Revocations (and
erasures) reach the gateway through an ``IDENTITY`` follower
(``confab.authority``): the matching entries are dropped before the follower
acknowledges the event, so before the revoking call returns. An answer from
identity that was in flight across a revocation is not believed: an owner
revoked in the last minute is refused whatever the answer said. While
identity cannot answer (its database is down, say), a credential it verified in
the last few minutes is still accepted: sends go to the log, which does not need
that database, and a revocation still drops it, since revocations come over NATS.
Failed checks are counted per client address: past the limit, that address's
credentials that are not in the cache are answered 429 without asking identity.

A dashboard principal carries the staff member's role, which can change without
the session ending: a role change (or a removal) drops their cached principals too,
and an answer that was in flight across it is asked again rather than believed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from nats.js import JetStreamContext

from confab.addresses import TrustedProxies
from confab.authority import (
    API_KEY_REVOKED,
    SESSION_REVOKED,
    STAFF_REMOVED,
    STAFF_ROLE_CHANGED,
    USER_ERASED,
    Change,
    Follower,
)
from confab.contracts.identity import (
    ApiKeyPrincipal,
    AuthenticateApiKey,
    AuthenticateSession,
    AuthenticateStaffSession,
    SessionPrincipal,
    StaffPrincipal,
)
from confab.errors import RateLimited, Unauthorized, Unavailable
from confab.ids import SECRET_PREFIX_LENGTH, same_secret, secret_hash, secret_prefix
from confab.logging import get_logger
from confab.rpc import RpcClient
from confab_gateway import sessions
from confab_gateway.ratelimit import TokenBuckets, retry_after

Principal = ApiKeyPrincipal | SessionPrincipal | StaffPrincipal
P = TypeVar("P", ApiKeyPrincipal, SessionPrincipal, StaffPrincipal)
Verify = AuthenticateApiKey | AuthenticateSession | AuthenticateStaffSession

log = get_logger("confab.gateway")

# Events that end a credential; the subject's last token names what they end.
_REVOKING = {API_KEY_REVOKED, SESSION_REVOKED, USER_ERASED}
# Events that change what a staff member's cached principal says (their role).
_RESTAFFING = {STAFF_ROLE_CHANGED, STAFF_REMOVED}
SIGN_IN_FIRST = "Sign in to the dashboard first."
# How long a revocation is remembered against answers in flight when it came.
RECENT_REVOCATION_SECONDS = 60.0


class Authenticator:
    def __init__(
        self,
        rpc: RpcClient,
        admin_token: str,
        *,
        ttl: float = 30.0,
        stale_for: float = 300.0,
        max_entries: int = 100_000,
        failures: TokenBuckets | None = None,
        proxies: TrustedProxies | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rpc = rpc
        self.failures = failures  # failed checks per client address (None: no limit)
        self._logged = TokenBuckets(rate=1 / 60, burst=1, max_keys=10_000)
        self._stale_logged = TokenBuckets(rate=1 / 60, burst=1, max_keys=1)
        self.proxies = proxies or TrustedProxies("")
        self.admin_hash = secret_hash(admin_token) if admin_token else ""
        self.ttl = ttl
        self.stale_for = stale_for  # how long past ``ttl`` an entry serves while identity is down
        self.max_entries = max_entries
        self.clock = clock
        # hash -> (principal, fresh until, the ids whose revocation ends it)
        self._cache: OrderedDict[str, tuple[Principal, float, tuple[str, ...]]] = OrderedDict()
        self._by_owner: dict[str, set[str]] = {}  # key id, session id or user id -> cache keys
        self._revoked: OrderedDict[str, float] = OrderedDict()  # owner -> when, last minute
        self._restaffed: OrderedDict[str, float] = OrderedDict()  # staff user -> when
        self._follower: Follower | None = None

    async def start(self, js: JetStreamContext) -> None:
        self._follower = Follower(js, "gateway", self.on_change)
        await self._follower.start()

    async def stop(self) -> None:
        if self._follower is not None:
            await self._follower.stop()

    async def authenticate(self, kind: str, request: web.Request) -> Principal | None:
        if kind == "public":
            return None
        address = self.proxies.client(request)
        if kind == "admin":
            self._check_admin(request, address)
            return None
        if kind == "api_key":
            cookie = sessions.token_of(request)
            if cookie and "X-API-Key" not in request.headers:
                return await self.staff(cookie, address)
            return await self.api_key(request.headers.get("X-API-Key", ""), address)
        if kind == "staff":
            return await self.staff(sessions.token_of(request), address)
        return await self.session(_bearer(request, "session token"), address)

    def _check_admin(self, request: web.Request, address: str) -> None:
        if not self.admin_hash:
            raise Unauthorized("The admin API is disabled: set CONFAB_ADMIN_TOKEN to enable it.")
        token = _bearer(request, "admin token")
        if not same_secret(self.admin_hash, secret_hash(token)):
            self._check_failures(address)
            self._failed(address)
            raise Unauthorized("Invalid admin token.")

    def check_failures(self, address: str) -> None:
        """For sign-in: refuse an address that has failed too often (429)."""
        self._check_failures(address)

    def failed(self, address: str) -> None:
        """For sign-in: count a failure against ``address``."""
        self._failed(address)

    def _check_failures(self, address: str) -> None:
        """Refuse to check credentials for an address that has failed too often."""
        wait = self.failures.wait(address) if self.failures is not None and address else 0.0
        if wait:
            retry = retry_after(wait)
            raise RateLimited(
                f"Too many failed authentications from your address; retry after {retry:g} s.",
                retry_after=retry,
            )

    def _failed(self, address: str) -> None:
        if self.failures is not None and address:
            self.failures.take(address)
            # The failure that spent the budget is logged, at most once a minute per address.
            if self.failures.wait(address) and not self._logged.take(address):
                log.warning("authentication_failures_limited", address=address)

    async def _verify(self, request: Verify, address: str) -> Any:
        """Ask identity, counting a refusal against ``address``."""
        self._check_failures(address)
        try:
            return await self.rpc.call(request)
        except Unauthorized:
            self._failed(address)
            raise

    async def api_key(self, key: str, address: str = "") -> ApiKeyPrincipal:
        if not key:
            raise Unauthorized("Send your API key in the X-API-Key header.")
        if not key.startswith("sk_") or len(key) <= SECRET_PREFIX_LENGTH or len(key) > 200:
            raise Unauthorized("Invalid API key.")
        digest = secret_hash(key)
        return await self._principal(digest, ApiKeyPrincipal, secret_prefix(key), address)

    async def session(self, token: str, address: str = "") -> SessionPrincipal:
        if not token.startswith("st_") or len(token) <= SECRET_PREFIX_LENGTH or len(token) > 200:
            raise Unauthorized("Invalid or expired session token.")
        digest = secret_hash(token)
        return await self._principal(digest, SessionPrincipal, secret_prefix(token), address)

    async def staff(self, token: str, address: str = "") -> StaffPrincipal:
        """The dashboard session in the cookie ``token``."""
        if not token:
            raise Unauthorized(SIGN_IN_FIRST)
        if not token.startswith("sd_") or len(token) <= SECRET_PREFIX_LENGTH or len(token) > 200:
            raise Unauthorized("Your dashboard session is not valid; sign in again.")
        digest = secret_hash(token)
        return await self._principal(digest, StaffPrincipal, secret_prefix(token), address)

    async def _principal(
        self,
        digest: str,
        kind: type[P],
        prefix: str,
        address: str,
    ) -> P:
        """The cached principal while fresh, else identity's answer; identity's last answer
        while it is unavailable, for ``stale_for`` more."""
        known, fresh = self._cached(digest)
        if not isinstance(known, kind) or not _current(known):
            known = None
        if known is not None and fresh:
            return known
        request: Verify = (
            AuthenticateApiKey(prefix=prefix, key_hash=digest)
            if kind is ApiKeyPrincipal
            else AuthenticateSession(prefix=prefix, token_hash=digest)
            if kind is SessionPrincipal
            else AuthenticateStaffSession(prefix=prefix, token_hash=digest)
        )
        for _ in range(2):
            asked = self.clock()
            try:
                principal: P = await self._verify(request, address)
            except Unavailable:
                if known is not None:
                    return self._stale(known)
                raise
            # A role changed while the answer was on its way: it may say the old one.
            if not self._restaffed_since(_owners(principal), asked):
                break
        owners = _owners(principal)
        if self._recently_revoked(owners):
            raise Unauthorized(
                "Invalid API key." if kind is ApiKeyPrincipal else "Invalid or expired session."
            )
        self._remember(digest, principal, *owners)
        return principal

    def forget_secret(self, secret: str) -> None:
        self._drop(secret_hash(secret))

    def forget(self, owner: str) -> None:
        for digest in list(self._by_owner.get(owner, ())):
            self._drop(digest)

    def _cached(self, digest: str) -> tuple[Principal | None, bool]:
        """The cached principal, if any, and whether it is fresh (else only good while
        identity is unavailable)."""
        entry = self._cache.get(digest)
        if entry is None:
            return None, False
        principal, fresh_until, _owners = entry
        now = self.clock()
        if now <= fresh_until:
            return principal, True
        if now > fresh_until + self.stale_for:
            self._drop(digest)
            return None, False
        return principal, False

    def _stale(self, principal: Principal) -> Principal:
        # Logged at most once a minute: an identity outage must not flood the log.
        if not self._stale_logged.take(""):
            log.warning("identity_unavailable_serving_cached_credentials")
        return principal

    def _remember(self, digest: str, principal: Principal, *owners: str) -> None:
        self._cache[digest] = (principal, self.clock() + self.ttl, owners)
        self._cache.move_to_end(digest)
        for owner in owners:
            self._by_owner.setdefault(owner, set()).add(digest)
        while len(self._cache) > self.max_entries:
            self._drop(next(iter(self._cache)))

    def _drop(self, digest: str) -> None:
        entry = self._cache.pop(digest, None)
        for owner in entry[2] if entry else ():
            keys = self._by_owner.get(owner)
            if keys is not None:
                keys.discard(digest)
                if not keys:
                    del self._by_owner[owner]

    def on_change(self, change: Change) -> None:
        """An ``IDENTITY`` change, from the follower: a revocation ends cached credentials,
        a staff change the cached principals that name the old role."""
        if change.type in _RESTAFFING:
            now = self.clock()
            self._restaffed[change.entity_id] = now
            self._restaffed.move_to_end(change.entity_id)
            while (
                self._restaffed
                and next(iter(self._restaffed.values())) < now - RECENT_REVOCATION_SECONDS
            ):
                self._restaffed.popitem(last=False)
            self.forget(change.entity_id)
        if change.type in _REVOKING:
            now = self.clock()
            self._revoked[change.entity_id] = now
            self._revoked.move_to_end(change.entity_id)
            while (
                self._revoked
                and next(iter(self._revoked.values())) < now - RECENT_REVOCATION_SECONDS
            ):
                self._revoked.popitem(last=False)
            self.forget(change.entity_id)

    def _recently_revoked(self, owners: tuple[str, ...]) -> bool:
        return any(owner in self._revoked for owner in owners)

    def _restaffed_since(self, owners: tuple[str, ...], asked: float) -> bool:
        return any(self._restaffed.get(owner, -1.0) >= asked for owner in owners)


def _current(principal: Principal) -> bool:
    if isinstance(principal, ApiKeyPrincipal):
        return True
    return principal.expires_at > datetime.now(UTC)


def _owners(principal: Principal) -> tuple[str, ...]:
    """The ids whose revocation or erasure ends ``principal``."""
    if isinstance(principal, ApiKeyPrincipal):
        return (principal.key_id,)
    return (principal.session_id, principal.user_id)


def _bearer(request: web.Request, what: str) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(f"Send your {what} as 'Authorization: Bearer <token>'.")
    return token.strip()
