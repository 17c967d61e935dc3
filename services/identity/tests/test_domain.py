"""The identity deciders (workspace, API key, user, session), without any backend."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from confab.contracts.events.identity import (
    ApiKeyIssued,
    ApiKeyRevoked,
    SessionIssued,
    SessionRevoked,
    UserBanned,
    UserErased,
    UserUnbanned,
    UserUpserted,
    WorkspaceCreated,
)
from confab.contracts.identity import METADATA_MAX_BYTES
from confab.decider import Decider
from confab.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from confab.ids import is_valid_id, secret_hash
from confab_identity import domain
from confab_identity.domain import (
    API_KEY,
    SESSION,
    USER,
    WORKSPACE,
    ApiKeyState,
    SessionState,
    UserState,
    WorkspaceState,
)
from confab_identity.erasure import ERASED_NAME

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
WS = "ws_one"
OTHER = "ws_two"


def decide(decider: Decider[Any, Any], command: domain.Command, state: Any) -> Any:
    """The one event ``command`` appends, or None when it changes nothing."""
    decision = decider.decide(command, state)
    assert len(decision.events) <= 1 and decision.result is None
    return decision.events[0] if decision.events else None


def upsert(external_id: str = "ext-1", workspace: str = WS, **fields: Any) -> domain.UpsertUser:
    fields.setdefault("name", "Ada")
    return domain.UpsertUser(
        workspace_id=workspace,
        now=fields.pop("now", T0),
        user_id=domain.user_id_for(workspace, external_id),
        external_id=external_id,
        **fields,
    )


def created_user(**fields: Any) -> tuple[UserState, str]:
    command = upsert(**fields)
    event = decide(USER, command, None)
    assert event is not None
    state = USER.evolve(None, event)
    assert isinstance(state, UserState)
    return state, command.user_id


# -- workspaces and API keys ----------------------------------------------------------------


def create_workspace(name: str = "Acme", app_key: str = "app_1") -> domain.CreateWorkspace:
    return domain.CreateWorkspace(
        workspace_id="ws_1", now=T0, name=name, app_key=app_key, app_secret="s3cret"
    )


def test_creating_a_workspace_makes_one_event_with_the_given_ids() -> None:
    event = decide(WORKSPACE, create_workspace(), None)
    assert event == WorkspaceCreated(
        workspace_id="ws_1", name="Acme", app_key="app_1", app_secret="s3cret", at=T0
    )
    assert WORKSPACE.evolve(None, event) == WorkspaceState(
        id="ws_1", name="Acme", app_key="app_1", created_at=T0
    )


def test_creating_a_workspace_on_an_existing_id_conflicts() -> None:
    existing = WorkspaceState(id="ws_1", name="Acme", app_key="app_1", created_at=T0)
    with pytest.raises(Conflict):
        decide(WORKSPACE, create_workspace("Other", "app_2"), existing)


def issue_key(workspace: WorkspaceState | None, workspace_id: str = WS) -> domain.IssueApiKey:
    return domain.IssueApiKey(
        workspace_id=workspace_id,
        now=T1,
        workspace=workspace,
        key_id="key_1",
        prefix="sk_abc",
        key_hash="h" * 64,
    )


def test_an_api_key_is_issued_only_in_an_existing_workspace() -> None:
    workspace = WorkspaceState(id=WS, name="Acme", app_key="app_1", created_at=T0)
    event = decide(API_KEY, issue_key(workspace), None)
    assert event == ApiKeyIssued(
        workspace_id=WS, key_id="key_1", prefix="sk_abc", key_hash="h" * 64, at=T1
    )
    assert API_KEY.evolve(None, event) == ApiKeyState(id="key_1", workspace_id=WS, created_at=T1)
    with pytest.raises(NotFound):
        decide(API_KEY, issue_key(None), None)
    with pytest.raises(NotFound):  # a workspace state of another id
        decide(API_KEY, issue_key(workspace, OTHER), None)
    with pytest.raises(Conflict):  # the key's subject has one already
        decide(API_KEY, issue_key(workspace), API_KEY.evolve(None, event))


def revoke_key(workspace_id: str = WS) -> domain.RevokeApiKey:
    return domain.RevokeApiKey(workspace_id=workspace_id, now=T1, key_id="key_1")


def test_an_api_key_is_revoked_once_then_revoking_appends_nothing() -> None:
    key = ApiKeyState(id="key_1", workspace_id=WS, created_at=T0)
    event = decide(API_KEY, revoke_key(), key)
    assert event == ApiKeyRevoked(workspace_id=WS, key_id="key_1", at=T1)
    revoked = API_KEY.evolve(key, event)
    assert revoked == ApiKeyState(id="key_1", workspace_id=WS, created_at=T0, revoked=True)
    assert decide(API_KEY, revoke_key(), revoked) is None


def test_revoking_an_unknown_or_foreign_api_key_is_not_found() -> None:
    key = ApiKeyState(id="key_1", workspace_id=OTHER, created_at=T0)
    with pytest.raises(NotFound):
        decide(API_KEY, revoke_key(), key)
    with pytest.raises(NotFound):
        decide(API_KEY, revoke_key(), None)
    # Another kind's events on the subject make no API key.
    _, user_id = created_user()
    others = API_KEY.fold([UserBanned(workspace_id=WS, user_id=user_id, at=T1)])
    with pytest.raises(NotFound):
        decide(API_KEY, revoke_key(), others)


# -- user ids --------------------------------------------------------------------------------


def test_a_user_id_is_derived_from_the_workspace_and_the_external_id() -> None:
    a = domain.user_id_for(WS, "ext-1")
    assert a == domain.user_id_for(WS, "ext-1")
    assert a != domain.user_id_for(OTHER, "ext-1")
    assert a != domain.user_id_for(WS, "ext-2")
    # No ambiguity from concatenation: ("ab", "c") and ("a", "bc") differ.
    assert domain.user_id_for("ab", "c") != domain.user_id_for("a", "bc")
    assert a.startswith("usr_") and len(a) == 30 and a == a.lower()
    assert is_valid_id(a)
    assert is_valid_id(domain.user_id_for(WS, "weird.*> id with spaces/ünïcode"))


# -- upsert ------------------------------------------------------------------------------------


def test_an_upsert_of_a_new_external_id_creates_the_user() -> None:
    command = upsert(email="ada@example.com", metadata={"plan": "pro", "a": 1})
    event = decide(USER, command, None)
    assert event == UserUpserted(
        workspace_id=WS,
        user_id=command.user_id,
        external_id="ext-1",
        name="Ada",
        email="ada@example.com",
        avatar_url=None,
        metadata={"plan": "pro", "a": 1},
        created=True,
        at=T0,
    )
    state = USER.evolve(None, event)
    assert isinstance(state, UserState)
    assert state.created_at == state.updated_at == T0
    assert not state.banned and not state.erased
    view = domain.user_view(state)
    assert (view.id, view.name, view.email, view.metadata) == (
        command.user_id,
        "Ada",
        "ada@example.com",
        {"plan": "pro", "a": 1},
    )


def test_an_upsert_of_an_existing_user_updates_it_keeping_its_id_and_created_at() -> None:
    state, user_id = created_user(email="ada@example.com", metadata={"k": "v"})
    event = decide(USER, upsert(name="Ada L.", now=T1), state)
    assert isinstance(event, UserUpserted)
    assert not event.created
    assert event.user_id == user_id and event.name == "Ada L."
    # Fields left out (None) keep their values; the event carries the whole profile.
    assert event.email == "ada@example.com" and event.metadata == {"k": "v"}
    after = USER.evolve(state, event)
    assert isinstance(after, UserState)
    assert after.created_at == T0 and after.updated_at == T1 and after.name == "Ada L."


def test_an_upsert_that_changes_nothing_appends_nothing() -> None:
    state, _ = created_user(email="ada@example.com", metadata={"a": 1, "b": 2})
    same = upsert(email="ada@example.com", metadata={"b": 2, "a": 1}, now=T1)
    assert decide(USER, same, state) is None
    # Leaving optional fields out is not a change either.
    assert decide(USER, upsert(now=T1), state) is None


def test_an_upsert_of_an_erased_user_conflicts_with_a_plain_message() -> None:
    state, user_id = created_user()
    erased = USER.evolve(state, UserErased(workspace_id=WS, user_id=user_id, at=T1))
    with pytest.raises(Conflict) as caught:
        decide(USER, upsert(now=T1), erased)
    assert "erased" in caught.value.message
    assert not caught.value.details


def test_metadata_over_the_limit_is_invalid_with_details() -> None:
    big = {"blob": "x" * METADATA_MAX_BYTES}
    with pytest.raises(InvalidRequest) as caught:
        decide(USER, upsert(metadata=big), None)
    assert "metadata" in caught.value.details
    # Just under the limit is fine (the encoded size counts, not the number of keys).
    fits = {"blob": "x" * (METADATA_MAX_BYTES - len(b'{"blob":""}'))}
    assert len(msgspec.json.encode(fits)) == METADATA_MAX_BYTES
    assert decide(USER, upsert(metadata=fits), None)
    state, _ = created_user()
    with pytest.raises(InvalidRequest) as caught:
        decide(USER, update(metadata=big), state)
    assert "metadata" in caught.value.details


# -- update (PATCH) ----------------------------------------------------------------------------


def update(workspace: str = WS, **fields: Any) -> domain.UpdateUser:
    return domain.UpdateUser(workspace_id=workspace, now=T1, **fields)


def test_an_update_keeps_unset_fields_and_clears_null_ones() -> None:
    state, _ = created_user(
        email="ada@example.com", avatar_url="https://x.test/a.png", metadata={"k": 1}
    )
    event = decide(USER, update(email=None, metadata=None), state)
    assert isinstance(event, UserUpserted) and not event.created
    assert event.name == "Ada" and event.avatar_url == "https://x.test/a.png"
    assert event.email is None and event.metadata == {}
    event = decide(USER, update(name="Grace"), state)
    assert isinstance(event, UserUpserted)
    assert event.name == "Grace" and event.email == "ada@example.com"
    assert event.metadata == {"k": 1}


def test_an_update_that_changes_nothing_appends_nothing() -> None:
    state, _ = created_user(email="ada@example.com")
    assert decide(USER, update(), state) is None
    assert decide(USER, update(name="Ada"), state) is None


def test_update_ban_and_erase_of_unknown_foreign_or_erased_users_are_not_found() -> None:
    state, user_id = created_user()
    erased = USER.evolve(state, UserErased(workspace_id=WS, user_id=user_id, at=T1))
    cases: list[tuple[UserState | None, str]] = [(None, WS), (state, OTHER), (erased, WS)]
    for current, workspace in cases:
        with pytest.raises(NotFound):
            decide(USER, update(workspace, name="X"), current)
        with pytest.raises(NotFound):
            decide(USER, ban(True, workspace), current)
        with pytest.raises(NotFound):
            decide(USER, domain.EraseUser(workspace_id=workspace, now=T1), current)


# -- ban and erase -------------------------------------------------------------------------------


def ban(banned: bool, workspace: str = WS) -> domain.SetUserBan:
    return domain.SetUserBan(workspace_id=workspace, now=T1, banned=banned)


def test_a_ban_and_an_unban_append_only_on_change_and_an_upsert_keeps_the_ban() -> None:
    state, user_id = created_user()
    assert decide(USER, ban(False), state) is None
    event = decide(USER, ban(True), state)
    assert event == UserBanned(workspace_id=WS, user_id=user_id, at=T1)
    banned = USER.evolve(state, event)
    assert isinstance(banned, UserState) and banned.banned and banned.updated_at == T1
    assert decide(USER, ban(True), banned) is None
    assert decide(USER, ban(False), banned) == UserUnbanned(workspace_id=WS, user_id=user_id, at=T1)
    # A later upsert keeps the ban.
    renamed = decide(USER, upsert(name="New", now=T1), banned)
    assert renamed is not None
    after = USER.evolve(banned, renamed)
    assert isinstance(after, UserState) and after.banned


def test_an_erasure_clears_the_profile() -> None:
    state, user_id = created_user(
        email="ada@example.com", avatar_url="https://x.test/a.png", metadata={"k": 1}
    )
    event = decide(USER, domain.EraseUser(workspace_id=WS, now=T1), state)
    assert event == UserErased(workspace_id=WS, user_id=user_id, at=T1)
    erased = USER.evolve(state, event)
    assert isinstance(erased, UserState)
    assert erased.erased and erased.name == ERASED_NAME
    assert (erased.email, erased.avatar_url, erased.metadata) == (None, None, {})
    assert erased.external_id == "ext-1" and erased.created_at == T0


# -- sessions ---------------------------------------------------------------------------------


def issue(
    owner: UserState | None, user_id: str, workspace: str = WS, ttl: int = 3600
) -> domain.IssueSession:
    return domain.IssueSession(
        workspace_id=workspace,
        now=T1,
        user_id=user_id,
        owner=owner,
        session_id="ses_1",
        prefix="st_abc",
        token_hash="h",
        ttl_seconds=ttl,
    )


def test_a_session_expires_after_its_ttl() -> None:
    user, user_id = created_user()
    event = decide(SESSION, issue(user, user_id, ttl=60), None)
    assert event == SessionIssued(
        workspace_id=WS,
        session_id="ses_1",
        user_id=user_id,
        prefix="st_abc",
        token_hash="h",
        expires_at=T1 + timedelta(seconds=60),
        at=T1,
    )
    assert SESSION.evolve(None, event) == SessionState(
        id="ses_1", workspace_id=WS, user_id=user_id, expires_at=T1 + timedelta(seconds=60)
    )


def test_banned_users_get_sessions() -> None:
    user, user_id = created_user()
    banned = USER.evolve(user, UserBanned(workspace_id=WS, user_id=user_id, at=T1))
    assert isinstance(decide(SESSION, issue(banned, user_id), None), SessionIssued)


def test_there_is_no_session_for_unknown_foreign_or_erased_users() -> None:
    user, user_id = created_user()
    erased = USER.evolve(user, UserErased(workspace_id=WS, user_id=user_id, at=T1))
    with pytest.raises(NotFound):
        decide(SESSION, issue(None, user_id), None)
    with pytest.raises(NotFound):
        decide(SESSION, issue(user, user_id, OTHER), None)
    with pytest.raises(NotFound):
        decide(SESSION, issue(erased, user_id), None)
    with pytest.raises(NotFound):  # the state handed in is some other user's
        decide(SESSION, issue(user, "usr_other"), None)


def revoke_session(workspace: str = WS) -> domain.RevokeSession:
    return domain.RevokeSession(workspace_id=workspace, now=T0)


def test_a_session_is_revoked_once_and_only_in_its_workspace() -> None:
    session = SessionState(id="ses_1", workspace_id=WS, user_id="usr_1", expires_at=T1)
    event = decide(SESSION, revoke_session(), session)
    assert event == SessionRevoked(workspace_id=WS, session_id="ses_1", at=T0)
    revoked = SESSION.evolve(session, event)
    assert isinstance(revoked, SessionState) and revoked.revoked
    with pytest.raises(NotFound):  # a revoked session is gone (DELETE twice: 404)
        decide(SESSION, revoke_session(), revoked)
    with pytest.raises(NotFound):
        decide(SESSION, revoke_session(OTHER), session)
    with pytest.raises(NotFound):
        decide(SESSION, revoke_session(), None)


# -- authentication checks -----------------------------------------------------------------------


def test_an_api_key_must_match_and_be_unrevoked_with_one_message_for_both() -> None:
    good = secret_hash("sk_right")
    domain.check_api_key(good, good, revoked=False)
    for presented, revoked in [(secret_hash("sk_wrong"), False), (good, True)]:
        with pytest.raises(Unauthorized) as caught:
            domain.check_api_key(good, presented, revoked=revoked)
        assert caught.value.message == "Invalid API key."


def test_a_session_token_fails_once_expired_revoked_erased_or_wrong() -> None:
    good = secret_hash("st_right")
    expires = T0 + timedelta(seconds=60)
    check = functools.partial(domain.check_session, good, expires_at=expires)
    check(good, revoked=False, user_erased=False, now=T0)
    check(good, revoked=False, user_erased=False, now=expires - timedelta(microseconds=1))
    failing: list[dict[str, Any]] = [
        {"now": expires},  # expired at exactly expires_at
        {"now": expires + timedelta(days=1)},
        {"revoked": True},
        {"user_erased": True},
        {"presented": secret_hash("st_wrong")},
    ]
    for case in failing:
        args = {"presented": good, "revoked": False, "user_erased": False, "now": T0, **case}
        with pytest.raises(Unauthorized) as caught:
            check(args.pop("presented"), **args)
        assert caught.value.message == "Invalid or expired session token."


# -- evolve ------------------------------------------------------------------------------------


def test_each_kind_ignores_events_that_are_not_its_own() -> None:
    user, _ = created_user()
    assert USER.evolve(user, ApiKeyRevoked(workspace_id=WS, key_id="k", at=T1)) is user
    assert USER.evolve(None, UserBanned(workspace_id=WS, user_id="u", at=T1)) is None
    assert SESSION.evolve(None, SessionRevoked(workspace_id=WS, session_id="s", at=T1)) is None
    workspace = WorkspaceCreated(workspace_id=WS, name="A", app_key="a", app_secret="s", at=T0)
    assert API_KEY.evolve(None, workspace) is None
    assert SESSION.evolve(None, workspace) is None
    assert USER.evolve(None, workspace) is None


def test_a_folded_history_gives_the_latest_state() -> None:
    user_id = domain.user_id_for(WS, "ext-1")
    state = USER.fold(
        [
            UserUpserted(
                workspace_id=WS, user_id=user_id, external_id="ext-1", name="A", created=True, at=T0
            ),
            UserBanned(workspace_id=WS, user_id=user_id, at=T0),
            UserUpserted(workspace_id=WS, user_id=user_id, external_id="ext-1", name="B", at=T1),
            UserUnbanned(workspace_id=WS, user_id=user_id, at=T1),
        ]
    )
    assert isinstance(state, UserState)
    assert (state.name, state.banned, state.created_at, state.updated_at) == ("B", False, T0, T1)


def test_a_command_of_another_kind_is_a_programming_error() -> None:
    for decider in (WORKSPACE, API_KEY, SESSION):
        with pytest.raises(TypeError):
            decider.decide(upsert(), None)
    with pytest.raises(TypeError):
        USER.decide(create_workspace(), None)
