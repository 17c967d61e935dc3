"""The identity deciders and evolve, without any backend."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from confab.contracts.base import Event
from confab.contracts.identity import (
    METADATA_MAX_BYTES,
    ApiKeyIssued,
    ApiKeyRevoked,
    CreateWorkspace,
    IssueSession,
    SessionInput,
    SessionIssued,
    SessionRevoked,
    SetUserBan,
    UpdateUser,
    UpsertUser,
    UserBanned,
    UserErased,
    UserInput,
    UserPatch,
    UserUnbanned,
    UserUpserted,
    WorkspaceCreated,
    WorkspaceInput,
)
from confab.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from confab.ids import is_valid_id, secret_hash
from confab_identity import domain
from confab_identity.domain import (
    ApiKeyState,
    SessionState,
    State,
    UserState,
    WorkspaceState,
    evolve,
)
from confab_identity.erasure import ERASED_NAME

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
WS = "ws_one"
OTHER = "ws_two"


def fold(*events: Event) -> State:
    return functools.reduce(evolve, events, domain.initial())


def upsert(external_id: str = "ext-1", workspace: str = WS, **fields: Any) -> UpsertUser:
    fields.setdefault("name", "Ada")
    return UpsertUser(workspace_id=workspace, input=UserInput(external_id=external_id, **fields))


def created_user(**fields: Any) -> tuple[UserState, str]:
    command = upsert(**fields)
    user_id = domain.user_id_for(WS, command.input.external_id)
    event = domain.decide_upsert_user(command, None, T0, user_id=user_id)
    assert event is not None
    state = evolve(None, event)
    assert isinstance(state, UserState)
    return state, user_id


# -- workspaces and API keys ----------------------------------------------------------------


def test_create_workspace_makes_one_event_with_the_given_ids() -> None:
    command = CreateWorkspace(input=WorkspaceInput(name="Acme"))
    event = domain.decide_create_workspace(
        command, None, T0, workspace_id="ws_1", app_key="app_1", app_secret="s3cret"
    )
    assert event == WorkspaceCreated(
        workspace_id="ws_1", name="Acme", app_key="app_1", app_secret="s3cret", at=T0
    )
    assert evolve(None, event) == WorkspaceState(
        id="ws_1", name="Acme", app_key="app_1", created_at=T0
    )


def test_create_workspace_on_an_existing_id_conflicts() -> None:
    existing = WorkspaceState(id="ws_1", name="Acme", app_key="app_1", created_at=T0)
    with pytest.raises(Conflict):
        domain.decide_create_workspace(
            CreateWorkspace(input=WorkspaceInput(name="Other")),
            existing,
            T1,
            workspace_id="ws_1",
            app_key="app_2",
            app_secret="x",
        )


def test_issue_api_key_needs_the_workspace() -> None:
    workspace = WorkspaceState(id=WS, name="Acme", app_key="app_1", created_at=T0)
    issue = functools.partial(
        domain.decide_issue_api_key, key_id="key_1", prefix="sk_abc", key_hash="h" * 64
    )
    event = issue(workspace, None, T1, workspace_id=WS)
    assert event == ApiKeyIssued(
        workspace_id=WS, key_id="key_1", prefix="sk_abc", key_hash="h" * 64, at=T1
    )
    assert evolve(None, event) == ApiKeyState(id="key_1", workspace_id=WS, created_at=T1)
    with pytest.raises(NotFound):
        issue(None, None, T1, workspace_id=WS)
    with pytest.raises(NotFound):  # a workspace state of another id
        issue(workspace, None, T1, workspace_id=OTHER)


def test_revoke_api_key_once_then_no_more_events() -> None:
    key = ApiKeyState(id="key_1", workspace_id=WS, created_at=T0)
    event = domain.decide_revoke_api_key(WS, "key_1", key, T1)
    assert event == ApiKeyRevoked(workspace_id=WS, key_id="key_1", at=T1)
    revoked = evolve(key, event)
    assert revoked == ApiKeyState(id="key_1", workspace_id=WS, created_at=T0, revoked=True)
    assert domain.decide_revoke_api_key(WS, "key_1", revoked, T1) is None


def test_revoke_an_unknown_or_foreign_api_key_is_not_found() -> None:
    key = ApiKeyState(id="key_1", workspace_id=OTHER, created_at=T0)
    with pytest.raises(NotFound):
        domain.decide_revoke_api_key(WS, "key_1", key, T1)
    with pytest.raises(NotFound):
        domain.decide_revoke_api_key(WS, "key_1", None, T1)
    with pytest.raises(NotFound):  # some other kind of state on that subject
        domain.decide_revoke_api_key(WS, "key_1", fold_user(), T1)


def fold_user() -> UserState:
    return created_user()[0]


# -- user ids --------------------------------------------------------------------------------


def test_user_id_is_derived_from_workspace_and_external_id() -> None:
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


def test_upsert_of_a_new_external_id_creates_the_user() -> None:
    command = upsert(email="ada@example.com", metadata={"plan": "pro", "a": 1})
    user_id = domain.user_id_for(WS, "ext-1")
    event = domain.decide_upsert_user(command, None, T0, user_id=user_id)
    assert event == UserUpserted(
        workspace_id=WS,
        user_id=user_id,
        external_id="ext-1",
        name="Ada",
        email="ada@example.com",
        avatar_url=None,
        metadata={"plan": "pro", "a": 1},
        created=True,
        at=T0,
    )
    state = evolve(None, event)
    assert isinstance(state, UserState)
    assert state.created_at == state.updated_at == T0
    assert not state.banned and not state.erased
    view = domain.user_view(state)
    assert (view.id, view.name, view.email, view.metadata) == (
        user_id,
        "Ada",
        "ada@example.com",
        {"plan": "pro", "a": 1},
    )


def test_upsert_of_an_existing_user_updates_it_keeping_its_id_and_created_at() -> None:
    state, user_id = created_user(email="ada@example.com", metadata={"k": "v"})
    event = domain.decide_upsert_user(upsert(name="Ada L."), state, T1, user_id=user_id)
    assert isinstance(event, UserUpserted)
    assert not event.created
    assert event.user_id == user_id and event.name == "Ada L."
    # Fields left out (None) keep their values; the event carries the whole profile.
    assert event.email == "ada@example.com" and event.metadata == {"k": "v"}
    after = evolve(state, event)
    assert isinstance(after, UserState)
    assert after.created_at == T0 and after.updated_at == T1 and after.name == "Ada L."


def test_upsert_that_changes_nothing_appends_nothing() -> None:
    state, user_id = created_user(email="ada@example.com", metadata={"a": 1, "b": 2})
    same = upsert(email="ada@example.com", metadata={"b": 2, "a": 1})
    assert domain.decide_upsert_user(same, state, T1, user_id=user_id) is None
    # Leaving optional fields out is not a change either.
    assert domain.decide_upsert_user(upsert(), state, T1, user_id=user_id) is None


def test_upsert_of_an_erased_user_conflicts_with_a_plain_message() -> None:
    state, user_id = created_user()
    erased = evolve(state, UserErased(workspace_id=WS, user_id=user_id, at=T1))
    with pytest.raises(Conflict) as caught:
        domain.decide_upsert_user(upsert(), erased, T1, user_id=user_id)
    assert "erased" in caught.value.message
    assert not caught.value.details


def test_metadata_over_the_limit_is_invalid_with_details() -> None:
    big = {"blob": "x" * METADATA_MAX_BYTES}
    with pytest.raises(InvalidRequest) as caught:
        domain.decide_upsert_user(upsert(metadata=big), None, T0, user_id="usr_x")
    assert "metadata" in caught.value.details
    # Just under the limit is fine (the encoded size counts, not the number of keys).
    fits = {"blob": "x" * (METADATA_MAX_BYTES - len(b'{"blob":""}'))}
    assert len(msgspec.json.encode(fits)) == METADATA_MAX_BYTES
    assert domain.decide_upsert_user(upsert(metadata=fits), None, T0, user_id="usr_x")
    state, user_id = created_user()
    patch = UpdateUser(workspace_id=WS, user_id=user_id, patch=UserPatch(metadata=big))
    with pytest.raises(InvalidRequest) as caught:
        domain.decide_update_user(patch, state, T1)
    assert "metadata" in caught.value.details


# -- update (PATCH) ----------------------------------------------------------------------------


def update(user_id: str, workspace: str = WS, **fields: Any) -> UpdateUser:
    return UpdateUser(workspace_id=workspace, user_id=user_id, patch=UserPatch(**fields))


def test_update_keeps_unset_fields_and_clears_null_ones() -> None:
    state, user_id = created_user(
        email="ada@example.com", avatar_url="https://x.test/a.png", metadata={"k": 1}
    )
    event = domain.decide_update_user(update(user_id, email=None, metadata=None), state, T1)
    assert isinstance(event, UserUpserted) and not event.created
    assert event.name == "Ada" and event.avatar_url == "https://x.test/a.png"
    assert event.email is None and event.metadata == {}
    event = domain.decide_update_user(update(user_id, name="Grace"), state, T1)
    assert isinstance(event, UserUpserted)
    assert event.name == "Grace" and event.email == "ada@example.com"
    assert event.metadata == {"k": 1}


def test_update_that_changes_nothing_appends_nothing() -> None:
    state, user_id = created_user(email="ada@example.com")
    assert domain.decide_update_user(update(user_id), state, T1) is None
    assert domain.decide_update_user(update(user_id, name="Ada"), state, T1) is None


def test_update_ban_and_erase_of_unknown_foreign_or_erased_users_are_not_found() -> None:
    state, user_id = created_user()
    erased = evolve(state, UserErased(workspace_id=WS, user_id=user_id, at=T1))
    cases: list[tuple[State, str]] = [(None, WS), (state, OTHER), (erased, WS)]
    for current, workspace in cases:
        with pytest.raises(NotFound):
            domain.decide_update_user(update(user_id, workspace, name="X"), current, T1)
        with pytest.raises(NotFound):
            ban = SetUserBan(workspace_id=workspace, user_id=user_id, banned=True)
            domain.decide_set_user_ban(ban, current, T1)
        with pytest.raises(NotFound):
            domain.decide_erase_user(workspace, current, T1)


# -- ban and erase -------------------------------------------------------------------------------


def test_ban_and_unban_append_only_on_change() -> None:
    state, user_id = created_user()
    ban = SetUserBan(workspace_id=WS, user_id=user_id, banned=True)
    unban = SetUserBan(workspace_id=WS, user_id=user_id, banned=False)
    assert domain.decide_set_user_ban(unban, state, T1) is None
    event = domain.decide_set_user_ban(ban, state, T1)
    assert event == UserBanned(workspace_id=WS, user_id=user_id, at=T1)
    banned = evolve(state, event)
    assert isinstance(banned, UserState) and banned.banned and banned.updated_at == T1
    assert domain.decide_set_user_ban(ban, banned, T1) is None
    assert domain.decide_set_user_ban(unban, banned, T1) == UserUnbanned(
        workspace_id=WS, user_id=user_id, at=T1
    )
    # A later upsert keeps the ban.
    renamed = domain.decide_upsert_user(upsert(name="New"), banned, T1, user_id=user_id)
    assert renamed is not None
    after = evolve(banned, renamed)
    assert isinstance(after, UserState) and after.banned


def test_erase_clears_the_profile() -> None:
    state, user_id = created_user(
        email="ada@example.com", avatar_url="https://x.test/a.png", metadata={"k": 1}
    )
    event = domain.decide_erase_user(WS, state, T1)
    assert event == UserErased(workspace_id=WS, user_id=user_id, at=T1)
    erased = evolve(state, event)
    assert isinstance(erased, UserState)
    assert erased.erased and erased.name == ERASED_NAME
    assert (erased.email, erased.avatar_url, erased.metadata) == (None, None, {})
    assert erased.external_id == "ext-1" and erased.created_at == T0


# -- sessions ---------------------------------------------------------------------------------


def issue(user_id: str, workspace: str = WS, ttl: int = 3600) -> IssueSession:
    return IssueSession(
        workspace_id=workspace, input=SessionInput(user_id=user_id, ttl_seconds=ttl)
    )


ISSUE = functools.partial(domain.decide_issue_session, session_id="ses_1", prefix="st_abc")


def test_issue_session_expires_after_the_ttl() -> None:
    user, user_id = created_user()
    event = ISSUE(issue(user_id, ttl=60), user, None, T1, token_hash="h")
    assert event == SessionIssued(
        workspace_id=WS,
        session_id="ses_1",
        user_id=user_id,
        prefix="st_abc",
        token_hash="h",
        expires_at=T1 + timedelta(seconds=60),
        at=T1,
    )
    assert evolve(None, event) == SessionState(
        id="ses_1", workspace_id=WS, user_id=user_id, expires_at=T1 + timedelta(seconds=60)
    )


def test_banned_users_get_sessions() -> None:
    user, user_id = created_user()
    banned = evolve(user, UserBanned(workspace_id=WS, user_id=user_id, at=T1))
    assert isinstance(ISSUE(issue(user_id), banned, None, T1, token_hash="h"), SessionIssued)


def test_no_session_for_unknown_foreign_or_erased_users() -> None:
    user, user_id = created_user()
    erased = evolve(user, UserErased(workspace_id=WS, user_id=user_id, at=T1))
    with pytest.raises(NotFound):
        ISSUE(issue(user_id), None, None, T1, token_hash="h")
    with pytest.raises(NotFound):
        ISSUE(issue(user_id, OTHER), user, None, T1, token_hash="h")
    with pytest.raises(NotFound):
        ISSUE(issue(user_id), erased, None, T1, token_hash="h")
    with pytest.raises(NotFound):  # the state handed in is some other user's
        ISSUE(issue("usr_other"), user, None, T1, token_hash="h")


def test_revoke_session_once_and_only_in_its_workspace() -> None:
    session = SessionState(id="ses_1", workspace_id=WS, user_id="usr_1", expires_at=T1)
    event = domain.decide_revoke_session(WS, session, T0)
    assert event == SessionRevoked(workspace_id=WS, session_id="ses_1", at=T0)
    revoked = evolve(session, event)
    assert isinstance(revoked, SessionState) and revoked.revoked
    with pytest.raises(NotFound):  # a revoked session is gone (DELETE twice: 404)
        domain.decide_revoke_session(WS, revoked, T0)
    with pytest.raises(NotFound):
        domain.decide_revoke_session(OTHER, session, T0)
    with pytest.raises(NotFound):
        domain.decide_revoke_session(WS, None, T0)


# -- authentication checks -----------------------------------------------------------------------


def test_api_key_check() -> None:
    good = secret_hash("sk_right")
    domain.check_api_key(good, good, revoked=False)
    for presented, revoked in [(secret_hash("sk_wrong"), False), (good, True)]:
        with pytest.raises(Unauthorized) as caught:
            domain.check_api_key(good, presented, revoked=revoked)
        assert caught.value.message == "Invalid API key."


def test_session_check_expiry_revocation_and_erasure() -> None:
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


def test_evolve_ignores_events_that_do_not_apply() -> None:
    user = fold_user()
    assert evolve(user, ApiKeyRevoked(workspace_id=WS, key_id="k", at=T1)) is user
    assert evolve(None, UserBanned(workspace_id=WS, user_id="u", at=T1)) is None
    assert evolve(None, SessionRevoked(workspace_id=WS, session_id="s", at=T1)) is None


def test_a_folded_history_gives_the_latest_state() -> None:
    user_id = domain.user_id_for(WS, "ext-1")
    state = fold(
        UserUpserted(
            workspace_id=WS, user_id=user_id, external_id="ext-1", name="A", created=True, at=T0
        ),
        UserBanned(workspace_id=WS, user_id=user_id, at=T0),
        UserUpserted(workspace_id=WS, user_id=user_id, external_id="ext-1", name="B", at=T1),
        UserUnbanned(workspace_id=WS, user_id=user_id, at=T1),
    )
    assert isinstance(state, UserState)
    assert (state.name, state.banned, state.created_at, state.updated_at) == ("B", False, T0, T1)
