"""The identity service over NATS RPC against real backends (no gateway).

All tests share one NATS server and its ``IDENTITY`` stream: each works in
workspaces of its own and never assumes the stream is empty.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from nats.js.errors import NotFoundError

from confab.bus import IDENTITY
from confab.contracts.base import Request
from confab.contracts.identity import (
    ApiKeyPrincipal,
    AppCredentials,
    AuthenticateApiKey,
    AuthenticateSession,
    CreateWorkspace,
    EraseUser,
    GetAppCredentials,
    GetUser,
    GetWorkspace,
    IssueApiKey,
    IssueSession,
    ListWorkspaces,
    RevokeApiKey,
    RevokeSession,
    Session,
    SessionInput,
    SessionPrincipal,
    SetUserBan,
    UpdateUser,
    UpsertUser,
    UserInput,
    UserPatch,
    UserSaved,
    UserUpserted,
    Workspace,
    WorkspaceInput,
    WorkspaceWithSecrets,
    subject,
)
from confab.db import create_engine
from confab.errors import ConfabError, Conflict, InvalidRequest, NotFound, Unauthorized, Unavailable
from confab.eventlog import read_subject
from confab.ids import numeric_app_id, secret_hash, secret_prefix
from confab.projection import ProjectionRunner, consumer_name
from confab.rpc import RpcClient
from confab.service import Service
from confab_identity import app
from confab_identity.erasure import ERASED_NAME
from confab_identity.projections import IdentityProjection
from confab_identity.settings import IdentitySettings
from confab_identity.store import TABLES
from confab_infra.testing import TestBackends, fresh_database

Call = Callable[[Request], Awaitable[Any]]


@asynccontextmanager
async def running_identity(nats_url: str, database_url: str) -> AsyncIterator[Service]:
    settings = IdentitySettings(
        nats_url=nats_url,
        database_url=database_url,
        instance=f"test-{uuid.uuid4().hex[:6]}",
        # A 2-core machine running the whole suite can lag its read model by seconds.
        read_wait_seconds=10.0,
    )
    service = Service("identity", settings)
    await service.start()
    try:
        await app.setup(service)
        # A fresh read model replays the shared stream first: let it catch up.
        last = (await service.js.stream_info(IDENTITY.name)).state.last_seq
        assert await service.runners["identity"].wait_for(last, 60)
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def identity(backends: TestBackends, fresh_database_url: str) -> AsyncIterator[Service]:
    async with running_identity(backends.nats_url, fresh_database_url) as service:
        yield service


@pytest.fixture
def call(identity: Service) -> Call:
    client = RpcClient(identity.nc, timeout=10.0)
    return client.call


async def new_workspace(call: Call, name: str = "Test") -> WorkspaceWithSecrets:
    return await call(CreateWorkspace(input=WorkspaceInput(name=name)))


def key_auth(secret: str) -> AuthenticateApiKey:
    return AuthenticateApiKey(prefix=secret_prefix(secret), key_hash=secret_hash(secret))


def session_auth(token: str) -> AuthenticateSession:
    return AuthenticateSession(prefix=secret_prefix(token), token_hash=secret_hash(token))


def revoke_session(workspace_id: str, token: str) -> RevokeSession:
    return RevokeSession(
        workspace_id=workspace_id, prefix=secret_prefix(token), token_hash=secret_hash(token)
    )


async def upsert(call: Call, workspace_id: str, external_id: str, **fields: Any) -> UserSaved:
    fields.setdefault("name", "Ann")
    return await call(
        UpsertUser(workspace_id=workspace_id, input=UserInput(external_id=external_id, **fields))
    )


async def fails(call: Call, request: Request, error: type[ConfabError]) -> ConfabError:
    with pytest.raises(error) as caught:
        await call(request)
    return caught.value


# -- workspaces and API keys --------------------------------------------------------------------


async def test_a_new_workspace_key_authenticates_and_a_revoked_one_does_not(call: Call) -> None:
    ws = await new_workspace(call, "Acme")
    assert ws.id.startswith("ws_") and ws.name == "Acme"
    assert ws.api_key.startswith("sk_") and len(ws.app_secret) >= 43
    assert ws.app_key.replace("_", "").replace("-", "").isalnum()

    principal = await call(key_auth(ws.api_key))
    assert isinstance(principal, ApiKeyPrincipal) and principal.workspace_id == ws.id

    wrong = AuthenticateApiKey(prefix=secret_prefix(ws.api_key), key_hash=secret_hash("sk_x"))
    assert (await fails(call, wrong, Unauthorized)).message == "Invalid API key."
    unknown = key_auth("sk_" + "z" * 43)
    assert (await fails(call, unknown, Unauthorized)).message == "Invalid API key."

    second = await call(IssueApiKey(workspace_id=ws.id))
    assert second.api_key != ws.api_key and second.workspace_id == ws.id
    assert (await call(key_auth(second.api_key))).key_id == second.id

    revoked = await call(RevokeApiKey(workspace_id=ws.id, key_id=second.id))
    err = await fails(call, key_auth(second.api_key), Unauthorized)
    assert err.message == "Invalid API key."
    # Revoking again is fine and writes nothing.
    again = await call(RevokeApiKey(workspace_id=ws.id, key_id=second.id))
    assert again.seq == revoked.seq
    # The first key still works.
    assert (await call(key_auth(ws.api_key))).workspace_id == ws.id


async def test_keys_of_unknown_or_other_workspaces_are_not_found(call: Call) -> None:
    ws, other = await new_workspace(call), await new_workspace(call)
    await fails(call, IssueApiKey(workspace_id="ws_doesnotexist"), NotFound)
    await fails(call, IssueApiKey(workspace_id="bad.subject>"), NotFound)
    first_key = (await call(key_auth(ws.api_key))).key_id
    await fails(call, RevokeApiKey(workspace_id=other.id, key_id=first_key), NotFound)
    await fails(call, RevokeApiKey(workspace_id=ws.id, key_id="key_nope"), NotFound)
    assert (await call(key_auth(ws.api_key))).workspace_id == ws.id


async def test_workspace_and_app_credentials_by_id_and_app_key(call: Call) -> None:
    ws = await new_workspace(call, "Found")
    found = await call(GetWorkspace(workspace_id=ws.id))
    assert found == Workspace(id=ws.id, name="Found", app_key=ws.app_key, created_at=ws.created_at)
    await fails(call, GetWorkspace(workspace_id="ws_unknown"), NotFound)
    creds = await call(GetAppCredentials(app_key=ws.app_key))
    assert creds == AppCredentials(workspace_id=ws.id, app_key=ws.app_key, app_secret=ws.app_secret)
    await fails(call, GetAppCredentials(app_key="app_unknown"), NotFound)
    assert await call(GetAppCredentials(workspace_id=ws.id)) == creds
    await fails(call, GetAppCredentials(workspace_id="ws_unknown"), NotFound)
    await fails(call, GetAppCredentials(), InvalidRequest)
    assert ws.pusher_app_id == numeric_app_id(ws.id) and ws.pusher_app_id.isdigit()


async def test_workspaces_are_listed_page_by_page_in_id_order(call: Call) -> None:
    mine = [(await new_workspace(call, f"W{i}")).id for i in range(3)]
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await call(ListWorkspaces(limit=2, after=after))
        assert len(page.data) <= 2
        seen += [w.id for w in page.data]
        if not page.has_more:
            assert page.next_cursor is None
            break
        assert page.next_cursor == page.data[-1].id
        after = page.next_cursor
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert [w for w in seen if w in mine] == mine
    await fails(call, ListWorkspaces(limit=0), InvalidRequest)
    await fails(call, ListWorkspaces(limit=101), InvalidRequest)


# -- users ---------------------------------------------------------------------------------------


async def test_upsert_creates_then_updates_the_same_user(call: Call) -> None:
    ws = await new_workspace(call)
    first = await upsert(call, ws.id, "ext-1", email="ann@example.com", metadata={"b": 1, "a": 2})
    assert first.created and first.user.external_id == "ext-1"
    got = await call(GetUser(workspace_id=ws.id, user_id=first.user.id))
    assert got == first.user

    second = await upsert(call, ws.id, "ext-1", name="Ann B.")
    assert not second.created and second.user.id == first.user.id
    assert second.seq > first.seq
    assert second.user.name == "Ann B." and second.user.email == "ann@example.com"
    assert second.user.created_at == first.user.created_at
    assert await call(GetUser(workspace_id=ws.id, user_id=first.user.id)) == second.user

    # Nothing changes: nothing appended, the same version answered.
    third = await upsert(call, ws.id, "ext-1", name="Ann B.")
    assert (third.created, third.seq, third.user) == (False, second.seq, second.user)

    err = await fails(
        call,
        UpsertUser(
            workspace_id=ws.id,
            input=UserInput(external_id="ext-2", name="Big", metadata={"x": "y" * 9000}),
        ),
        InvalidRequest,
    )
    assert "metadata" in err.details


async def test_patch_ban_and_min_seq(call: Call) -> None:
    ws = await new_workspace(call)
    saved = await upsert(call, ws.id, "ext-1", email="a@example.com", metadata={"k": 1})
    uid = saved.user.id
    patched = await call(
        UpdateUser(workspace_id=ws.id, user_id=uid, patch=UserPatch(email=None, name="Bea"))
    )
    assert (patched.user.name, patched.user.email, patched.user.metadata) == ("Bea", None, {"k": 1})
    banned = await call(SetUserBan(workspace_id=ws.id, user_id=uid, banned=True))
    assert banned.user.banned and banned.seq > patched.seq
    got = await call(GetUser(workspace_id=ws.id, user_id=uid, min_seq=banned.seq))
    assert got == banned.user
    # Banned users can still get a session (they can read, not post).
    session = await call(IssueSession(workspace_id=ws.id, input=SessionInput(user_id=uid)))
    assert session.user.banned
    unbanned = await call(SetUserBan(workspace_id=ws.id, user_id=uid, banned=False))
    assert not unbanned.user.banned
    # A min_seq the read model cannot reach in time is "try again", not a wrong answer.
    far = GetUser(workspace_id=ws.id, user_id=uid, min_seq=unbanned.seq + 10**9)
    await fails(call, far, Unavailable)


async def test_concurrent_upserts_of_one_new_external_id_make_one_user(
    backends: TestBackends, fresh_database_url: str, identity: Service, call: Call
) -> None:
    # Two instances (two aggregate caches, one read model), as in production.
    async with running_identity(backends.nats_url, fresh_database_url):
        ws = await new_workspace(call)
        replies = await asyncio.gather(*(upsert(call, ws.id, "same-ext") for _ in range(20)))
    assert sum(r.created for r in replies) == 1
    assert len({r.user.id for r in replies}) == 1
    uid = replies[0].user.id
    events = [
        e.event async for e in read_subject(identity.nc, IDENTITY.name, subject(ws.id, "user", uid))
    ]
    assert all(isinstance(e, UserUpserted) for e in events)
    assert [e.created for e in events if isinstance(e, UserUpserted)] == [True]
    assert (await call(GetUser(workspace_id=ws.id, user_id=uid))).id == uid


async def test_cross_workspace_access_is_not_found(call: Call) -> None:
    ws, other = await new_workspace(call), await new_workspace(call)
    uid = (await upsert(call, ws.id, "ext-1")).user.id
    session = await call(IssueSession(workspace_id=ws.id, input=SessionInput(user_id=uid)))
    for request in (
        GetUser(workspace_id=other.id, user_id=uid),
        UpdateUser(workspace_id=other.id, user_id=uid, patch=UserPatch(name="X")),
        SetUserBan(workspace_id=other.id, user_id=uid, banned=True),
        EraseUser(workspace_id=other.id, user_id=uid),
        IssueSession(workspace_id=other.id, input=SessionInput(user_id=uid)),
        revoke_session(other.id, session.token),
        GetUser(workspace_id=ws.id, user_id="usr_unknown"),
        GetUser(workspace_id=ws.id, user_id="not a valid id"),
    ):
        await fails(call, request, NotFound)
    # The same external id in another workspace is another user.
    theirs = await upsert(call, other.id, "ext-1")
    assert theirs.created and theirs.user.id != uid
    # Nothing above touched the first workspace's user or session.
    assert not (await call(GetUser(workspace_id=ws.id, user_id=uid))).banned
    assert (await call(session_auth(session.token))).user_id == uid


# -- sessions ----------------------------------------------------------------------------------


async def test_session_issued_authenticated_and_revoked(call: Call) -> None:
    ws = await new_workspace(call)
    user = (await upsert(call, ws.id, "ext-1")).user
    before = datetime.now(UTC)
    session = await call(
        IssueSession(workspace_id=ws.id, input=SessionInput(user_id=user.id, ttl_seconds=60))
    )
    assert isinstance(session, Session) and session.token.startswith("st_")
    assert session.user == user
    expected = before + timedelta(seconds=60)
    assert expected <= session.expires_at <= datetime.now(UTC) + timedelta(seconds=60)

    principal = await call(session_auth(session.token))
    assert principal == SessionPrincipal(
        workspace_id=ws.id,
        session_id=principal.session_id,
        user_id=user.id,
        expires_at=session.expires_at,
    )
    wrong = AuthenticateSession(prefix=secret_prefix(session.token), token_hash=secret_hash("x"))
    err = await fails(call, wrong, Unauthorized)
    assert err.message == "Invalid or expired session token."

    await call(revoke_session(ws.id, session.token))
    err = await fails(call, session_auth(session.token), Unauthorized)
    assert err.message == "Invalid or expired session token."
    await fails(call, revoke_session(ws.id, session.token), NotFound)  # gone, like DELETE twice
    await fails(call, revoke_session(ws.id, "st_" + "q" * 43), NotFound)
    # The ttl is bounded by the contract: the service refuses to decode less than a minute.
    short = SessionInput(user_id=user.id, ttl_seconds=5)  # msgspec checks on decode only
    err = await fails(call, IssueSession(workspace_id=ws.id, input=short), InvalidRequest)
    assert "ttl_seconds" in err.message
    await fails(
        call, IssueSession(workspace_id=ws.id, input=SessionInput(user_id="usr_no")), NotFound
    )


async def test_erase_removes_the_profile_and_ends_sessions(call: Call, identity: Service) -> None:
    ws = await new_workspace(call)
    user = (
        await upsert(
            call, ws.id, "gone", email="gone@example.com", avatar_url="https://x.test/a.png"
        )
    ).user
    tokens = [
        (await call(IssueSession(workspace_id=ws.id, input=SessionInput(user_id=user.id)))).token
        for _ in range(2)
    ]
    for token in tokens:
        assert (await call(session_auth(token))).user_id == user.id

    await call(EraseUser(workspace_id=ws.id, user_id=user.id))
    await fails(call, GetUser(workspace_id=ws.id, user_id=user.id), NotFound)
    for token in tokens:
        await fails(call, session_auth(token), Unauthorized)
    await fails(
        call, IssueSession(workspace_id=ws.id, input=SessionInput(user_id=user.id)), NotFound
    )
    await fails(call, EraseUser(workspace_id=ws.id, user_id=user.id), NotFound)
    err = await fails(
        call,
        UpsertUser(workspace_id=ws.id, input=UserInput(external_id="gone", name="Back")),
        Conflict,
    )
    assert "erased" in err.message

    assert identity.engine is not None
    users = TABLES.users
    async with identity.engine.connect() as conn:
        row = (await conn.execute(sa.select(users).where(users.c.id == user.id))).one()
    assert row.erased and row.name == ERASED_NAME
    assert (row.email, row.avatar_url, row._mapping["metadata"]) == (None, None, {})


# -- replay -------------------------------------------------------------------------------------


async def snapshot(engine: Any, workspace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    async with engine.connect() as conn:
        for table in TABLES.all():
            column = table.c.id if table is TABLES.workspaces else table.c.workspace_id
            rows = await conn.execute(
                sa.select(table).where(column.in_(workspace_ids)).order_by(table.c.id)
            )
            out[table.name] = [dict(r._mapping) for r in rows]
    return out


async def test_replaying_identity_into_fresh_tables_reproduces_the_read_model(
    backends: TestBackends, identity: Service, call: Call
) -> None:
    ws, other = await new_workspace(call, "Replay A"), await new_workspace(call, "Replay B")
    extra_key = await call(IssueApiKey(workspace_id=ws.id))
    await call(RevokeApiKey(workspace_id=ws.id, key_id=extra_key.id))
    ann = (await upsert(call, ws.id, "ann", metadata={"z": 1, "a": [1, 2]})).user
    bob = (await upsert(call, ws.id, "bob", email="bob@example.com")).user
    await upsert(call, ws.id, "ann", name="Ann 2", avatar_url="https://x.test/ann.png")
    await call(SetUserBan(workspace_id=ws.id, user_id=bob.id, banned=True))
    s1 = await call(IssueSession(workspace_id=ws.id, input=SessionInput(user_id=ann.id)))
    await call(IssueSession(workspace_id=ws.id, input=SessionInput(user_id=bob.id)))
    await call(revoke_session(ws.id, s1.token))
    await call(EraseUser(workspace_id=ws.id, user_id=bob.id))
    await upsert(call, other.id, "ann")
    mine = [ws.id, other.id]

    live_runner = identity.runners["identity"]
    last = (await identity.js.stream_info(IDENTITY.name)).state.last_seq
    assert await live_runner.wait_for(last, 10)
    assert identity.engine is not None
    live = await snapshot(identity.engine, mine)
    assert [len(live[t]) for t in ("workspaces", "api_keys", "users", "sessions")] == [2, 3, 3, 2]

    name = f"identity_replay_{uuid.uuid4().hex[:8]}"
    with fresh_database(backends.database_url) as replay_url:
        engine = create_engine(replay_url, pool_size=2)
        keys = await identity.key_ring()
        projection = IdentityProjection(name, keys=keys)
        runner = ProjectionRunner(identity.js, engine, replay_url, projection)
        try:
            await runner.start()
            assert await runner.wait_for(last, 30), runner.last_error
            replayed = await snapshot(engine, mine)
        finally:
            await runner.stop()
            await engine.dispose()
            with suppress(NotFoundError):
                await identity.js.delete_consumer(IDENTITY.name, consumer_name(name))
    assert replayed == live
