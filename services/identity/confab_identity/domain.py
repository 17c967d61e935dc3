"""The identity deciders: one per aggregate kind (workspace, API key, user, session,
staff member, invitation).

Each is a decider as in ``confab.decider``: ``decide(command, state) ->
Decision``, ``evolve(state, event) -> state`` and ``initial()`` (``None``: a
subject with no events yet); pure (no I/O, no clock, no randomness). Every
subject of ``IDENTITY`` (``identity.evt.<workspace>.<kind>.<id>``) is one
aggregate of its kind, folded by that kind's ``evolve``; events of another
kind leave a state as it is.

A command is one of the typed values below and carries everything the
decision needs: ``now``, ids and secrets made up front, and the state of
another aggregate the handler loaded first (the workspace an API key belongs
to, the user a session is for). A decision holds the one event to append,
none when the command changes nothing, or it raises a typed ``ConfabError``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from confab.contracts.events import Event
from confab.contracts.events.identity import (
    ApiKeyIssued,
    ApiKeyRevoked,
    InvitationAccepted,
    InvitationCreated,
    InvitationRevoked,
    SessionIssued,
    SessionRevoked,
    StaffJoined,
    StaffRemoved,
    StaffRoleChanged,
    StaffSignedIn,
    StaffSignInFailed,
    UserBanned,
    UserErased,
    UserUnbanned,
    UserUpserted,
    WorkspaceCreated,
)
from confab.contracts.identity import METADATA_MAX_BYTES, User
from confab.decider import NOTHING, Decider, Decision, emit
from confab.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unauthorized,
)
from confab.ids import same_secret
from confab.staff import may_manage
from confab_identity.erasure import erased_profile

INVALID_API_KEY = "Invalid API key."
INVALID_SESSION = "Invalid or expired session token."


def none() -> None:
    """The state of a subject with no events: every identity aggregate starts as nothing."""
    return None


class Command(msgspec.Struct, kw_only=True, frozen=True):
    """What every identity command carries: the workspace it acts in, and when."""

    workspace_id: str
    now: datetime


# -- workspaces ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkspaceState:
    id: str
    name: str
    app_key: str
    created_at: datetime


class CreateWorkspace(Command, kw_only=True, frozen=True):
    name: str
    app_key: str
    app_secret: str


def evolve_workspace(state: WorkspaceState | None, event: Event) -> WorkspaceState | None:
    if isinstance(event, WorkspaceCreated):
        return WorkspaceState(
            id=event.workspace_id, name=event.name, app_key=event.app_key, created_at=event.at
        )
    return state


def decide_workspace(command: Command, state: WorkspaceState | None) -> Decision[None]:
    match command:
        case CreateWorkspace():
            if state is not None:
                raise Conflict("A workspace with this id exists already.")
            return emit(
                WorkspaceCreated(
                    workspace_id=command.workspace_id,
                    name=command.name,
                    app_key=command.app_key,
                    app_secret=command.app_secret,
                    at=command.now,
                )
            )
    raise TypeError(f"not a workspace command: {type(command).__name__}")


WORKSPACE: Decider[Command, WorkspaceState | None] = Decider(
    initial=none, evolve=evolve_workspace, decide=decide_workspace
)


# -- API keys ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiKeyState:
    id: str
    workspace_id: str
    created_at: datetime
    revoked: bool = False


class IssueApiKey(Command, kw_only=True, frozen=True):
    workspace: WorkspaceState | None  # the workspace's state (loaded by the handler)
    key_id: str
    prefix: str
    key_hash: str


class RevokeApiKey(Command, kw_only=True, frozen=True):
    key_id: str


def evolve_api_key(state: ApiKeyState | None, event: Event) -> ApiKeyState | None:
    match event:
        case ApiKeyIssued():
            return ApiKeyState(
                id=event.key_id, workspace_id=event.workspace_id, created_at=event.at
            )
        case ApiKeyRevoked() if state is not None:
            return replace(state, revoked=True)
    return state


def decide_api_key(command: Command, state: ApiKeyState | None) -> Decision[None]:
    match command:
        case IssueApiKey():
            workspace = command.workspace
            if workspace is None or workspace.id != command.workspace_id:
                raise NotFound("Workspace not found.")
            if state is not None:
                raise Conflict("An API key with this id exists already.")
            return emit(
                ApiKeyIssued(
                    workspace_id=command.workspace_id,
                    key_id=command.key_id,
                    prefix=command.prefix,
                    key_hash=command.key_hash,
                    at=command.now,
                )
            )
        case RevokeApiKey():
            if state is None or state.workspace_id != command.workspace_id:
                raise NotFound("API key not found.")
            if state.revoked:
                return NOTHING
            return emit(
                ApiKeyRevoked(
                    workspace_id=command.workspace_id, key_id=command.key_id, at=command.now
                )
            )
    raise TypeError(f"not an API key command: {type(command).__name__}")


API_KEY: Decider[Command, ApiKeyState | None] = Decider(
    initial=none, evolve=evolve_api_key, decide=decide_api_key
)


# -- users ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserState:
    id: str
    workspace_id: str
    external_id: str
    name: str
    email: str | None
    avatar_url: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    banned: bool = False
    erased: bool = False
    banned_until: datetime | None = None  # a timed ban's end


class UpsertUser(Command, kw_only=True, frozen=True):
    """Create the user, or update the fields given; fields left out (None) stay as they are."""

    user_id: str  # derived from the workspace and external_id (``user_id_for``)
    external_id: str
    name: str
    email: str | None = None
    avatar_url: str | None = None
    metadata: dict[str, Any] | None = None


class UpdateUser(Command, kw_only=True, frozen=True):
    """PATCH: UNSET keeps a field, None clears it (metadata becomes empty)."""

    name: str | UnsetType = UNSET
    email: str | UnsetType | None = UNSET
    avatar_url: str | UnsetType | None = UNSET
    metadata: dict[str, Any] | UnsetType | None = UNSET


class SetUserBan(Command, kw_only=True, frozen=True):
    """Ban (until ``until``, or until lifted) or unban. ``if_until``: the scheduled
    unban of a timed ban, which lifts only that ban (not one given since)."""

    banned: bool
    until: datetime | None = None
    if_until: datetime | None = None


class EraseUser(Command, kw_only=True, frozen=True):
    pass


def evolve_user(state: UserState | None, event: Event) -> UserState | None:
    match event:
        case UserUpserted():
            return UserState(
                id=event.user_id,
                workspace_id=event.workspace_id,
                external_id=event.external_id,
                name=event.name,
                email=event.email,
                avatar_url=event.avatar_url,
                metadata=dict(event.metadata),
                created_at=state.created_at if state else event.at,
                updated_at=event.at,
                banned=state.banned if state else False,
                banned_until=state.banned_until if state else None,
            )
        case UserBanned() if state is not None:
            return replace(state, banned=True, banned_until=event.until, updated_at=event.at)
        case UserUnbanned() if state is not None:
            return replace(state, banned=False, banned_until=None, updated_at=event.at)
        case UserErased() if state is not None:
            return replace(state, **erased_profile(event.at))
    return state


def decide_user(command: Command, state: UserState | None) -> Decision[None]:
    match command:
        case UpsertUser():
            return _upsert(command, state)
        case UpdateUser():
            return _update(command, state)
        case SetUserBan():
            user = live_user(state, command.workspace_id)
            if command.if_until is not None and user.banned_until != command.if_until:
                return NOTHING  # banned again (or lifted) since: not this schedule's ban
            if command.banned:
                if user.banned and user.banned_until == command.until:
                    return NOTHING
                return emit(
                    UserBanned(
                        workspace_id=user.workspace_id,
                        user_id=user.id,
                        at=command.now,
                        until=command.until,
                    )
                )
            if not user.banned:
                return NOTHING
            return emit(
                UserUnbanned(workspace_id=user.workspace_id, user_id=user.id, at=command.now)
            )
        case EraseUser():
            user = live_user(state, command.workspace_id)
            return emit(UserErased(workspace_id=user.workspace_id, user_id=user.id, at=command.now))
    raise TypeError(f"not a user command: {type(command).__name__}")


USER: Decider[Command, UserState | None] = Decider(
    initial=none, evolve=evolve_user, decide=decide_user
)


def _upsert(command: UpsertUser, user: UserState | None) -> Decision[None]:
    check_metadata(command.metadata)
    if user is not None and user.erased:
        raise Conflict("This user was erased; an erased user cannot be created again.")
    if user is None:
        return _upserted(
            None,
            workspace_id=command.workspace_id,
            user_id=command.user_id,
            external_id=command.external_id,
            name=command.name,
            email=command.email,
            avatar_url=command.avatar_url,
            metadata=dict(command.metadata or {}),
            now=command.now,
        )
    return _upserted(
        user,
        workspace_id=user.workspace_id,
        user_id=user.id,
        external_id=user.external_id,
        name=command.name,
        email=command.email if command.email is not None else user.email,
        avatar_url=command.avatar_url if command.avatar_url is not None else user.avatar_url,
        metadata=dict(command.metadata) if command.metadata is not None else dict(user.metadata),
        now=command.now,
    )


def _update(command: UpdateUser, state: UserState | None) -> Decision[None]:
    user = live_user(state, command.workspace_id)
    if not isinstance(command.metadata, UnsetType):
        check_metadata(command.metadata)

    def pick(value: Any, current: Any) -> Any:
        return current if isinstance(value, UnsetType) else value

    metadata = pick(command.metadata, user.metadata)
    return _upserted(
        user,
        workspace_id=user.workspace_id,
        user_id=user.id,
        external_id=user.external_id,
        name=pick(command.name, user.name),
        email=pick(command.email, user.email),
        avatar_url=pick(command.avatar_url, user.avatar_url),
        metadata=dict(metadata or {}),
        now=command.now,
    )


def _upserted(
    user: UserState | None,
    *,
    workspace_id: str,
    user_id: str,
    external_id: str,
    name: str,
    email: str | None,
    avatar_url: str | None,
    metadata: dict[str, Any],
    now: datetime,
) -> Decision[None]:
    """A ``user.upserted`` carrying the complete new profile, or nothing if nothing changes."""
    if (
        user is not None
        and user.name == name
        and user.email == email
        and user.avatar_url == avatar_url
        and user.metadata == metadata
    ):
        return NOTHING
    return emit(
        UserUpserted(
            workspace_id=workspace_id,
            user_id=user_id,
            external_id=external_id,
            name=name,
            email=email,
            avatar_url=avatar_url,
            metadata=metadata,
            created=user is None,
            at=now,
        )
    )


def user_id_for(workspace_id: str, external_id: str) -> str:
    """The id of a workspace's user with ``external_id``: the same for every writer."""
    digest = hashlib.sha256(f"{workspace_id}\0{external_id}".encode()).digest()
    return "usr_" + base64.b32encode(digest).decode("ascii")[:26].lower()


def check_metadata(metadata: dict[str, Any] | None) -> None:
    if metadata is not None and len(msgspec.json.encode(metadata)) > METADATA_MAX_BYTES:
        raise InvalidRequest(
            "The metadata is too large.",
            {"metadata": f"must be at most {METADATA_MAX_BYTES} bytes as JSON"},
        )


def live_user(state: UserState | None, workspace_id: str) -> UserState:
    """The workspace's user in ``state``, or NotFound (unknown, another workspace's, erased)."""
    if state is None or state.workspace_id != workspace_id or state.erased:
        raise NotFound("User not found.")
    return state


def user_view(state: UserState) -> User:
    return User(
        id=state.id,
        external_id=state.external_id,
        name=state.name,
        email=state.email,
        avatar_url=state.avatar_url,
        metadata=dict(state.metadata),
        banned=state.banned,
        created_at=state.created_at,
        updated_at=state.updated_at,
    )


# -- sessions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionState:
    id: str
    workspace_id: str
    user_id: str
    expires_at: datetime
    revoked: bool = False


class IssueSession(Command, kw_only=True, frozen=True):
    """A session for a live user of the workspace; banned users get one too (read-only)."""

    user_id: str
    owner: UserState | None  # the user's state, fresh from the log (loaded by the handler)
    session_id: str
    prefix: str
    token_hash: str
    ttl_seconds: int
    dashboard: bool = False  # a staff member's dashboard session


class RevokeSession(Command, kw_only=True, frozen=True):
    pass


def evolve_session(state: SessionState | None, event: Event) -> SessionState | None:
    match event:
        case SessionIssued():
            return SessionState(
                id=event.session_id,
                workspace_id=event.workspace_id,
                user_id=event.user_id,
                expires_at=event.expires_at,
            )
        case SessionRevoked() if state is not None:
            return replace(state, revoked=True)
    return state


def decide_session(command: Command, state: SessionState | None) -> Decision[None]:
    match command:
        case IssueSession():
            owner = live_user(command.owner, command.workspace_id)
            if owner.id != command.user_id:
                raise NotFound("User not found.")
            if state is not None:
                raise Conflict("A session with this id exists already.")
            return emit(
                SessionIssued(
                    workspace_id=command.workspace_id,
                    session_id=command.session_id,
                    user_id=owner.id,
                    prefix=command.prefix,
                    token_hash=command.token_hash,
                    expires_at=command.now + timedelta(seconds=command.ttl_seconds),
                    at=command.now,
                    dashboard=command.dashboard,
                )
            )
        case RevokeSession():
            # A revoked session is gone: revoking it again is NotFound, as for an unknown one.
            if state is None or state.workspace_id != command.workspace_id or state.revoked:
                raise NotFound("Session not found.")
            return emit(
                SessionRevoked(
                    workspace_id=command.workspace_id, session_id=state.id, at=command.now
                )
            )
    raise TypeError(f"not a session command: {type(command).__name__}")


SESSION: Decider[Command, SessionState | None] = Decider(
    initial=none, evolve=evolve_session, decide=decide_session
)


# -- staff members -------------------------------------------------------------------------

INVALID_SIGN_IN = "The email or password is not right."
MAX_FAILED_SIGN_INS = 5  # within FAILURE_WINDOW, locks the account for LOCKOUT
FAILURE_WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class StaffState:
    user_id: str
    workspace_id: str
    email: str
    role: str
    password_hash: str
    joined_at: datetime
    removed: bool = False
    failures: tuple[datetime, ...] = ()  # failed sign-ins since the last good one
    locked_until: datetime | None = None


class JoinStaff(Command, kw_only=True, frozen=True):
    """Make the user staff: accepting an invitation, or the first owner."""

    user_id: str
    email: str
    role: str
    password_hash: str
    invitation_id: str | None = None


class ChangeRole(Command, kw_only=True, frozen=True):
    """``by_role`` None: a tenant API key (every permission). ``owners``: how many owners
    the workspace has now (the last one cannot step down)."""

    role: str
    by: str
    by_role: str | None
    owners: int


class RemoveStaff(Command, kw_only=True, frozen=True):
    by: str
    by_role: str | None
    owners: int


class RecordSignIn(Command, kw_only=True, frozen=True):
    """The outcome of a password check the handler made (argon2 is not pure)."""

    password_ok: bool
    session_id: str


def evolve_staff(state: StaffState | None, event: Event) -> StaffState | None:
    match event:
        case StaffJoined():
            return StaffState(
                user_id=event.user_id,
                workspace_id=event.workspace_id,
                email=event.email,
                role=event.role,
                password_hash=event.password_hash,
                joined_at=event.at,
            )
        case StaffRoleChanged() if state is not None:
            return replace(state, role=event.role)
        case StaffRemoved() if state is not None:
            return replace(state, removed=True)
        case StaffSignInFailed() if state is not None:
            return replace(
                state,
                failures=(*state.failures, event.at)[-MAX_FAILED_SIGN_INS:],
                locked_until=event.locked_until or state.locked_until,
            )
        case StaffSignedIn() if state is not None:
            return replace(state, failures=(), locked_until=None)
    return state


def live_staff(state: StaffState | None, workspace_id: str) -> StaffState:
    if state is None or state.workspace_id != workspace_id or state.removed:
        raise NotFound("Staff member not found.")
    return state


def check_manage(by_role: str | None, *roles: str) -> None:
    """Forbidden unless ``by_role`` may manage staff with each of ``roles``."""
    if by_role is None:
        return
    for role in roles:
        if not may_manage(by_role, role):
            if role == "owner":
                raise Forbidden("Only an owner may invite, change or remove owners.")
            raise Forbidden("Your role does not allow managing the team.")


def locked_for(state: StaffState, now: datetime) -> float:
    """Seconds until the account may try again (0: not locked)."""
    if state.locked_until is None or now >= state.locked_until:
        return 0.0
    return (state.locked_until - now).total_seconds()


def refuse_locked(state: StaffState, now: datetime) -> None:
    wait = locked_for(state, now)
    if wait and state.locked_until is not None:
        until = state.locked_until.strftime("%H:%M UTC")
        raise RateLimited(
            f"Too many wrong passwords for this account: it is locked until {until}. "
            "Try again then, or ask an admin to reset your access.",
            retry_after=float(int(wait) + 1),
        )


def decide_staff(command: Command, state: StaffState | None) -> Decision[None]:
    match command:
        case JoinStaff():
            if state is not None and not state.removed:
                raise Conflict("This person is on the team already.")
            return emit(
                StaffJoined(
                    workspace_id=command.workspace_id,
                    user_id=command.user_id,
                    email=command.email,
                    role=command.role,
                    password_hash=command.password_hash,
                    invitation_id=command.invitation_id,
                    at=command.now,
                )
            )
        case ChangeRole():
            member = live_staff(state, command.workspace_id)
            check_manage(command.by_role, member.role, command.role)
            if member.role == command.role:
                return NOTHING
            if member.role == "owner" and command.owners <= 1:
                raise Conflict("The workspace's last owner cannot step down; make another first.")
            return emit(
                StaffRoleChanged(
                    workspace_id=member.workspace_id,
                    user_id=member.user_id,
                    role=command.role,
                    by=command.by,
                    at=command.now,
                )
            )
        case RemoveStaff():
            member = live_staff(state, command.workspace_id)
            check_manage(command.by_role, member.role)
            if member.role == "owner" and command.owners <= 1:
                raise Conflict("The workspace's last owner cannot be removed.")
            return emit(
                StaffRemoved(
                    workspace_id=member.workspace_id,
                    user_id=member.user_id,
                    by=command.by,
                    at=command.now,
                )
            )
        case RecordSignIn():
            if state is None or state.workspace_id != command.workspace_id or state.removed:
                raise Unauthorized(INVALID_SIGN_IN)
            refuse_locked(state, command.now)
            if command.password_ok:
                return emit(
                    StaffSignedIn(
                        workspace_id=state.workspace_id,
                        user_id=state.user_id,
                        session_id=command.session_id,
                        at=command.now,
                    )
                )
            recent = [t for t in state.failures if command.now - t < FAILURE_WINDOW]
            locks = len(recent) + 1 >= MAX_FAILED_SIGN_INS
            return emit(
                StaffSignInFailed(
                    workspace_id=state.workspace_id,
                    user_id=state.user_id,
                    locked_until=command.now + LOCKOUT if locks else None,
                    at=command.now,
                )
            )
    raise TypeError(f"not a staff command: {type(command).__name__}")


STAFF: Decider[Command, StaffState | None] = Decider(
    initial=none, evolve=evolve_staff, decide=decide_staff
)


# -- invitations ---------------------------------------------------------------------------

INVALID_INVITATION = "This invitation link is not valid: it was used, withdrawn or never made."
EXPIRED_INVITATION = "This invitation has expired; ask whoever invited you for a new one."


@dataclass(frozen=True, slots=True)
class InvitationState:
    id: str
    workspace_id: str
    email: str
    role: str
    expires_at: datetime
    accepted: bool = False
    revoked: bool = False


class CreateInvitation(Command, kw_only=True, frozen=True):
    invitation_id: str
    email: str
    role: str
    prefix: str
    token_hash: str
    ttl_seconds: int
    by: str
    by_role: str | None


class AcceptInvitation(Command, kw_only=True, frozen=True):
    user_id: str


class RevokeInvitation(Command, kw_only=True, frozen=True):
    by: str
    by_role: str | None


def evolve_invitation(state: InvitationState | None, event: Event) -> InvitationState | None:
    match event:
        case InvitationCreated():
            return InvitationState(
                id=event.invitation_id,
                workspace_id=event.workspace_id,
                email=event.email,
                role=event.role,
                expires_at=event.expires_at,
            )
        case InvitationAccepted() if state is not None:
            return replace(state, accepted=True)
        case InvitationRevoked() if state is not None:
            return replace(state, revoked=True)
    return state


def usable_invitation(
    state: InvitationState | None, workspace_id: str, now: datetime
) -> InvitationState:
    """The invitation if it can still be accepted: single use, not withdrawn, not expired."""
    if state is None or state.workspace_id != workspace_id or state.accepted or state.revoked:
        raise NotFound(INVALID_INVITATION)
    if now >= state.expires_at:
        raise NotFound(EXPIRED_INVITATION)
    return state


def decide_invitation(command: Command, state: InvitationState | None) -> Decision[None]:
    match command:
        case CreateInvitation():
            check_manage(command.by_role, command.role)
            if state is not None:
                raise Conflict("An invitation with this id exists already.")
            return emit(
                InvitationCreated(
                    workspace_id=command.workspace_id,
                    invitation_id=command.invitation_id,
                    email=command.email,
                    role=command.role,
                    prefix=command.prefix,
                    token_hash=command.token_hash,
                    expires_at=command.now + timedelta(seconds=command.ttl_seconds),
                    by=command.by,
                    at=command.now,
                )
            )
        case AcceptInvitation():
            invitation = usable_invitation(state, command.workspace_id, command.now)
            return emit(
                InvitationAccepted(
                    workspace_id=invitation.workspace_id,
                    invitation_id=invitation.id,
                    user_id=command.user_id,
                    at=command.now,
                )
            )
        case RevokeInvitation():
            if state is None or state.workspace_id != command.workspace_id:
                raise NotFound("Invitation not found.")
            check_manage(command.by_role, state.role)
            if state.revoked or state.accepted:
                return NOTHING
            return emit(
                InvitationRevoked(
                    workspace_id=state.workspace_id,
                    invitation_id=state.id,
                    by=command.by,
                    at=command.now,
                )
            )
    raise TypeError(f"not an invitation command: {type(command).__name__}")


INVITATION: Decider[Command, InvitationState | None] = Decider(
    initial=none, evolve=evolve_invitation, decide=decide_invitation
)


def staff_external_id(email: str) -> str:
    """The external id of a staff member's user: one user per email in a workspace."""
    return "staff:" + email.strip().lower()


# -- authentication (pure checks of what the read model holds) -----------------------------


def check_api_key(stored_hash: str, presented_hash: str, revoked: bool) -> None:
    """Raise Unauthorized unless the key matches and is not revoked; one message for all."""
    if not same_secret(stored_hash, presented_hash) or revoked:
        raise Unauthorized(INVALID_API_KEY)


def check_session(
    stored_hash: str,
    presented_hash: str,
    *,
    expires_at: datetime,
    revoked: bool,
    user_erased: bool,
    now: datetime,
) -> None:
    """Raise Unauthorized unless the token matches and the session is still usable."""
    usable = not revoked and not user_erased and now < expires_at
    if not same_secret(stored_hash, presented_hash) or not usable:
        raise Unauthorized(INVALID_SESSION)
