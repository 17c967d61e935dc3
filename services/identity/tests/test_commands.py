"""Command handling of identity over the in-memory log: the shell and the four deciders.

No NATS, no PostgreSQL: each aggregate kind's decider runs in ``Aggregates``
on one ``MemoryLog`` (``IDENTITY``), with what a handler would load first
passed in the commands. Two sets of ``Aggregates`` on one log are two identity
processes with their own caches. The same paths against the real backends are
in ``test_identity_service.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from confab import aggregate
from confab.aggregate import Aggregates, Executed
from confab.contracts.events.identity import (
    ApiKeyIssued,
    SessionIssued,
    UserErased,
    UserUpserted,
    WorkspaceCreated,
    subject,
)
from confab.decider import Decider
from confab.errors import Conflict, NotFound
from confab.ids import new_id
from confab.memlog import MemoryLog
from confab_identity import domain

T0 = datetime(2025, 1, 2, tzinfo=UTC)
WS = "ws_1"


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregate, "BACKOFF_SECONDS", 0.0)


class Process:
    """One identity process: an ``Aggregates`` per kind, all on one log."""

    def __init__(self, log: MemoryLog) -> None:
        self.workspaces = Aggregates(log, domain.WORKSPACE)
        self.api_keys = Aggregates(log, domain.API_KEY)
        self.users = Aggregates(log, domain.USER)
        self.sessions = Aggregates(log, domain.SESSION)


async def run(kind: Aggregates[Any, Any], subject_: str, command: domain.Command) -> Executed[Any]:
    return await kind.execute(subject_, command, msg_id=new_id("evt"), workspace=WS)


def upsert(name: str = "Ada", external_id: str = "ext-1") -> domain.UpsertUser:
    return domain.UpsertUser(
        workspace_id=WS,
        now=T0,
        user_id=domain.user_id_for(WS, external_id),
        external_id=external_id,
        name=name,
    )


USER_ID = domain.user_id_for(WS, "ext-1")
USER = subject(WS, "user", USER_ID)


def session(owner: domain.UserState | None, session_id: str = "ses_1") -> domain.IssueSession:
    return domain.IssueSession(
        workspace_id=WS,
        now=T0,
        user_id=USER_ID,
        owner=owner,
        session_id=session_id,
        prefix="st_x",
        token_hash="h",
        ttl_seconds=60,
    )


async def test_a_workspace_and_its_first_api_key_are_two_aggregates_of_one_log() -> None:
    log = MemoryLog()
    process = Process(log)
    create = domain.CreateWorkspace(
        workspace_id=WS, now=T0, name="Acme", app_key="app_1", app_secret="s"
    )
    created = await run(process.workspaces, subject(WS, "workspace", WS), create)
    issue = domain.IssueApiKey(
        workspace_id=WS, now=T0, workspace=created.state, key_id="key_1", prefix="p", key_hash="h"
    )
    issued = await run(process.api_keys, subject(WS, "api_key", "key_1"), issue)
    assert isinstance(created.event, WorkspaceCreated) and isinstance(issued.event, ApiKeyIssued)
    assert (created.version, issued.version) == (1, 2)
    # A key of a workspace the log does not have is refused.
    unknown = domain.IssueApiKey(
        workspace_id="ws_2", now=T0, workspace=None, key_id="key_2", prefix="p", key_hash="h"
    )
    with pytest.raises(NotFound):
        await run(process.api_keys, subject("ws_2", "api_key", "key_2"), unknown)
    assert log.last_seq == 2


async def test_two_processes_upserting_one_external_id_make_one_user() -> None:
    log = MemoryLog()
    first, second = Process(log), Process(log)
    await second.users.load(USER)  # second has seen no user yet
    made = await run(first.users, USER, upsert("Ada"))
    renamed = await run(second.users, USER, upsert("Ada L."))  # loses the race, decides again
    again = await run(second.users, USER, upsert("Ada L."))
    assert [e.created for e in log.events(USER) if isinstance(e, UserUpserted)] == [True, False]
    assert made.event.created and not renamed.event.created and again.events == ()  # type: ignore[union-attr]
    assert renamed.state.created_at == made.state.created_at


async def test_an_erasure_by_one_process_holds_against_another_s_stale_cache() -> None:
    log = MemoryLog()
    first, second = Process(log), Process(log)
    await run(first.users, USER, upsert())
    await second.users.load(USER)  # second caches the live user
    erase = domain.EraseUser(workspace_id=WS, now=T0 + timedelta(seconds=1))
    await run(first.users, USER, erase)
    with pytest.raises(Conflict):  # decided on the cache, then again on the log: erased
        await run(second.users, USER, upsert("Back"))
    with pytest.raises(NotFound):
        await run(second.users, USER, domain.SetUserBan(workspace_id=WS, now=T0, banned=True))
    # A session needs the user fresh from the log, as the handler loads it.
    owner, _ = await second.users.load(USER, fresh=True)
    with pytest.raises(NotFound):
        await run(second.sessions, subject(WS, "session", "ses_1"), session(owner))
    assert [type(e) for e in log.events(USER)] == [UserUpserted, UserErased]


async def test_a_session_revoked_by_one_process_is_gone_for_another() -> None:
    log = MemoryLog()
    first, second = Process(log), Process(log)
    made = await run(first.users, USER, upsert())
    where = subject(WS, "session", "ses_1")
    issued = await run(first.sessions, where, session(made.state))
    assert isinstance(issued.event, SessionIssued)
    await second.sessions.load(where)  # second caches the live session
    revoke = domain.RevokeSession(workspace_id=WS, now=T0)
    await run(first.sessions, where, revoke)
    with pytest.raises(NotFound):  # decided on the cache, refused by the log
        await run(second.sessions, where, revoke)
    assert len(log.events(where)) == 2


@pytest.mark.parametrize(
    "decider",
    [domain.WORKSPACE, domain.API_KEY, domain.USER, domain.SESSION],
    ids=["workspace", "api_key", "user", "session"],
)
async def test_each_kind_folds_only_its_own_events_from_a_shared_log(
    decider: Decider[Any, Any],
) -> None:
    log = MemoryLog()
    process = Process(log)
    await run(process.users, USER, upsert())
    # Every kind reads the user's subject; only the user decider makes a state of it.
    state, version = await Aggregates(log, decider).load(USER)
    assert version == 1
    assert (state is not None) == (decider is domain.USER)
