"""The gateway's credential cache over real NATS, with a stand-in identity service that can
be told to be down: while identity cannot answer, credentials it verified in the last few
minutes are still accepted, unknown ones are not, and revocations still end them."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client as NATS

from confab import bus, eventlog
from confab.authority import fence
from confab.contracts.events.identity import SessionRevoked, subject
from confab.contracts.identity import (
    ApiKeyPrincipal,
    AuthenticateApiKey,
    AuthenticateSession,
    SessionPrincipal,
)
from confab.errors import Unauthorized, Unavailable
from confab.ids import secret_hash
from confab.rpc import CallContext, RpcClient, RpcServer
from confab_gateway.auth import Authenticator
from confab_infra.testing import TestBackends

KEY = "sk_" + "k" * 40
TOKEN = "st_" + "t" * 40
OTHER_TOKEN = "st_" + "o" * 40


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Identity:
    """Answers for one API key and two sessions, or says its store is unavailable."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.expires = datetime.now(UTC) + timedelta(hours=1)

    async def api_key(self, request: AuthenticateApiKey, _ctx: CallContext) -> ApiKeyPrincipal:
        self.calls += 1
        if self.down:
            raise Unavailable("The identity service cannot reach its stores; try again.")
        if request.key_hash != secret_hash(KEY):
            raise Unauthorized("Invalid API key.")
        return ApiKeyPrincipal(workspace_id="w1", key_id="key1")

    async def session(self, request: AuthenticateSession, _ctx: CallContext) -> SessionPrincipal:
        self.calls += 1
        if self.down:
            raise Unavailable("The identity service cannot reach its stores; try again.")
        sessions = {secret_hash(TOKEN): "s1", secret_hash(OTHER_TOKEN): "s2"}
        if request.token_hash not in sessions:
            raise Unauthorized("Invalid or expired session token.")
        sid = sessions[request.token_hash]
        return SessionPrincipal(
            workspace_id="w1", session_id=sid, user_id=f"u-{sid}", expires_at=self.expires
        )


@pytest.fixture
async def nats(backends: TestBackends) -> AsyncIterator[NATS]:
    nc = await bus.connect(backends.nats_url, f"auth-cache-{uuid.uuid4().hex[:6]}")
    yield nc
    await nc.close()


@pytest.fixture
async def identity(nats: NATS) -> AsyncIterator[Identity]:
    stand_in = Identity()
    server = RpcServer(nats, "identity")
    await server.serve(AuthenticateApiKey, stand_in.api_key)
    await server.serve(AuthenticateSession, stand_in.session)
    yield stand_in
    await server.stop()


@pytest.fixture
async def auth(nats: NATS, identity: Identity) -> AsyncIterator[tuple[Authenticator, Clock]]:
    clock = Clock()
    authenticator = Authenticator(RpcClient(nats, 2.0), "", ttl=30.0, stale_for=300.0, clock=clock)
    await bus.ensure_streams(nats.jetstream(), [bus.IDENTITY])
    await authenticator.start(nats.jetstream())
    yield authenticator, clock
    await authenticator.stop()


async def test_while_identity_is_down_recently_verified_credentials_still_pass(
    auth: tuple[Authenticator, Clock], identity: Identity
) -> None:
    authenticator, clock = auth
    assert (await authenticator.session(TOKEN)).session_id == "s1"
    assert (await authenticator.api_key(KEY)).key_id == "key1"
    assert identity.calls == 2

    identity.down = True
    clock.now += 31  # past the cache's freshness: identity is asked, and cannot answer
    assert (await authenticator.session(TOKEN)).session_id == "s1"
    assert (await authenticator.api_key(KEY)).key_id == "key1"
    assert identity.calls == 4
    # A credential never verified is refused as unavailable, never let through.
    with pytest.raises(Unavailable):
        await authenticator.session(OTHER_TOKEN)

    clock.now += 300  # past the stale allowance too
    with pytest.raises(Unavailable):
        await authenticator.session(TOKEN)

    identity.down = False  # back: verified again, fresh again
    assert (await authenticator.session(TOKEN)).session_id == "s1"


async def test_a_revocation_ends_a_cached_credential_even_while_identity_is_down(
    auth: tuple[Authenticator, Clock], identity: Identity, nats: NATS
) -> None:
    authenticator, clock = auth
    await authenticator.session(TOKEN)
    identity.down = True
    js = nats.jetstream()
    revoked = SessionRevoked(workspace_id="w1", session_id="s1", at=datetime.now(UTC))
    stored = await eventlog.append(
        js,
        bus.IDENTITY.name,
        subject("w1", "session", "s1"),
        revoked,
        msg_id=uuid.uuid4().hex,
        workspace="w1",
    )
    # What identity does before a revocation's reply: every follower has applied it.
    assert await fence(js, stored.seq)
    assert authenticator._cached(secret_hash(TOKEN))[0] is None
    clock.now += 31
    with pytest.raises(Unavailable):
        await authenticator.session(TOKEN)


async def test_an_expired_session_is_not_served_from_the_cache(
    auth: tuple[Authenticator, Clock], identity: Identity
) -> None:
    authenticator, clock = auth
    identity.expires = datetime.now(UTC) + timedelta(milliseconds=1)
    await authenticator.session(TOKEN)
    deadline = time.monotonic() + 5
    while datetime.now(UTC) <= identity.expires:
        assert time.monotonic() < deadline
    identity.down = True
    clock.now += 31
    with pytest.raises(Unavailable):
        await authenticator.session(TOKEN)
