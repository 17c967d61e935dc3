"""The staff and invitation deciders, without any backend: roles, lockout, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from confab.contracts.events.identity import (
    InvitationAccepted,
    StaffJoined,
    StaffRoleChanged,
    StaffSignedIn,
)
from confab.errors import Conflict, Forbidden, NotFound, RateLimited, Unauthorized
from confab_identity import domain
from confab_identity.domain import INVITATION, STAFF

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
WS = "ws_a"


def joined(role: str) -> domain.StaffState:
    event = StaffJoined(
        workspace_id=WS, user_id="usr_x", email="x@example.com", role=role,
        password_hash="$argon2id$...", at=T0,
    )  # fmt: skip
    state = STAFF.fold([event])
    assert state is not None
    return state


def sign_in(state: domain.StaffState, ok: bool, at: datetime) -> domain.StaffState:
    decision = STAFF.decide(
        domain.RecordSignIn(workspace_id=WS, now=at, password_ok=ok, session_id="ses_1"), state
    )
    after = STAFF.fold(decision.events, state)
    assert after is not None
    return after


def test_five_wrong_passwords_in_the_window_lock_the_account_until_a_time() -> None:
    state = joined("agent")
    for i in range(domain.MAX_FAILED_SIGN_INS - 1):
        state = sign_in(state, False, T0 + timedelta(minutes=i))
        assert state.locked_until is None
    state = sign_in(state, False, T0 + timedelta(minutes=5))
    assert state.locked_until == T0 + timedelta(minutes=5) + domain.LOCKOUT
    # Locked: even the right password is refused, saying until when.
    with pytest.raises(RateLimited) as refused:
        sign_in(state, True, T0 + timedelta(minutes=6))
    assert "locked until" in refused.value.message and refused.value.retry_after > 0
    # After the lockout the right password works and clears the count.
    later = T0 + timedelta(minutes=5) + domain.LOCKOUT
    state = sign_in(state, True, later)
    assert state.failures == () and state.locked_until is None


def test_failures_older_than_the_window_do_not_count() -> None:
    state = joined("agent")
    for i in range(domain.MAX_FAILED_SIGN_INS - 1):
        state = sign_in(state, False, T0 + timedelta(minutes=i))
    state = sign_in(state, False, T0 + domain.FAILURE_WINDOW + timedelta(minutes=4))
    assert state.locked_until is None


def test_a_right_password_resets_the_count() -> None:
    state = joined("agent")
    for i in range(domain.MAX_FAILED_SIGN_INS - 1):
        state = sign_in(state, False, T0 + timedelta(seconds=i))
    decision = STAFF.decide(
        domain.RecordSignIn(workspace_id=WS, now=T0, password_ok=True, session_id="ses_2"), state
    )
    assert isinstance(decision.events[0], StaffSignedIn)
    state = sign_in(sign_in(state, True, T0), False, T0)
    assert state.locked_until is None and len(state.failures) == 1


def test_removed_or_other_workspaces_staff_cannot_sign_in() -> None:
    state = joined("agent")
    with pytest.raises(Unauthorized):
        STAFF.decide(
            domain.RecordSignIn(workspace_id="ws_b", now=T0, password_ok=True, session_id="s"),
            state,
        )


@pytest.mark.parametrize(
    ("by_role", "target", "new", "refused"),
    [
        ("admin", "admin", "owner", Forbidden),  # an admin making themselves owner
        ("admin", "owner", "agent", Forbidden),  # an admin demoting an owner
        ("agent", "moderator", "agent", Forbidden),
        ("moderator", "agent", "moderator", Forbidden),
        ("admin", "agent", "moderator", None),
        ("owner", "admin", "owner", None),
        (None, "agent", "owner", None),  # an API key: every permission
    ],
)
def test_who_may_change_whose_role(
    by_role: str | None, target: str, new: str, refused: type[Exception] | None
) -> None:
    command = domain.ChangeRole(
        workspace_id=WS, now=T0, role=new, by="usr_by", by_role=by_role, owners=2
    )
    if refused is not None:
        with pytest.raises(refused):
            STAFF.decide(command, joined(target))
    else:
        event = STAFF.decide(command, joined(target)).events[0]
        assert isinstance(event, StaffRoleChanged) and event.role == new


def test_the_last_owner_cannot_step_down_or_leave() -> None:
    change = domain.ChangeRole(
        workspace_id=WS, now=T0, role="admin", by="usr_x", by_role="owner", owners=1
    )
    with pytest.raises(Conflict):
        STAFF.decide(change, joined("owner"))
    remove = domain.RemoveStaff(workspace_id=WS, now=T0, by="usr_x", by_role="owner", owners=1)
    with pytest.raises(Conflict):
        STAFF.decide(remove, joined("owner"))


def invitation(role: str = "agent", by_role: str | None = "admin") -> domain.InvitationState:
    decision = INVITATION.decide(
        domain.CreateInvitation(
            workspace_id=WS, now=T0, invitation_id="inv_1", email="new@example.com", role=role,
            prefix="inv_abc", token_hash="h", ttl_seconds=3600, by="usr_by", by_role=by_role,
        ),
        None,
    )  # fmt: skip
    state = INVITATION.fold(decision.events)
    assert state is not None
    return state


def test_an_invitation_expires_and_is_single_use() -> None:
    state = invitation()
    accept = domain.AcceptInvitation(workspace_id=WS, now=T0 + timedelta(minutes=59), user_id="u")
    event = INVITATION.decide(accept, state).events[0]
    assert isinstance(event, InvitationAccepted)
    used = INVITATION.fold([event], state)
    with pytest.raises(NotFound, match="not valid"):
        INVITATION.decide(accept, used)
    late = domain.AcceptInvitation(workspace_id=WS, now=T0 + timedelta(hours=1), user_id="u")
    with pytest.raises(NotFound, match="expired"):
        INVITATION.decide(late, state)
    other = domain.AcceptInvitation(workspace_id="ws_b", now=T0, user_id="u")
    with pytest.raises(NotFound):
        INVITATION.decide(other, state)


def test_only_an_owner_invites_an_owner() -> None:
    with pytest.raises(Forbidden):
        invitation(role="owner", by_role="admin")
    with pytest.raises(Forbidden):
        invitation(role="agent", by_role="agent")
    assert invitation(role="owner", by_role="owner").role == "owner"
