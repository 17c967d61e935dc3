"""The identity deciders: pure functions from a command and the current state to an event.

No I/O, no clock, no randomness: the handler passes ``now`` and any new ids or
secrets in. Every subject of ``IDENTITY`` (a workspace, an API key, a user, a
session) is one aggregate; ``evolve`` folds its events into one of the state
types below (``None`` for a subject with no events yet).

A ``decide_*`` function returns the one event to append, ``None`` when the
command changes nothing, or raises a typed ``ConfabError``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import msgspec

from confab.contracts.base import Event
from confab.contracts.identity import (
    METADATA_MAX_BYTES,
    ApiKeyIssued,
    ApiKeyRevoked,
    CreateWorkspace,
    IssueSession,
    SessionIssued,
    SessionRevoked,
    SetUserBan,
    UpdateUser,
    UpsertUser,
    User,
    UserBanned,
    UserErased,
    UserUnbanned,
    UserUpserted,
    WorkspaceCreated,
)
from confab.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from confab.ids import same_secret
from confab_identity.erasure import erased_profile

INVALID_API_KEY = "Invalid API key."
INVALID_SESSION = "Invalid or expired session token."

# -- states --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkspaceState:
    id: str
    name: str
    app_key: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyState:
    id: str
    workspace_id: str
    created_at: datetime
    revoked: bool = False


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


@dataclass(frozen=True, slots=True)
class SessionState:
    id: str
    workspace_id: str
    user_id: str
    expires_at: datetime
    revoked: bool = False


State = WorkspaceState | ApiKeyState | UserState | SessionState | None


def initial() -> State:
    return None


def evolve(state: State, event: Event) -> State:
    """The state of a subject after ``event``; events of other kinds leave it as it is."""
    match event:
        case WorkspaceCreated():
            return WorkspaceState(
                id=event.workspace_id, name=event.name, app_key=event.app_key, created_at=event.at
            )
        case ApiKeyIssued():
            return ApiKeyState(
                id=event.key_id, workspace_id=event.workspace_id, created_at=event.at
            )
        case ApiKeyRevoked() if isinstance(state, ApiKeyState):
            return replace(state, revoked=True)
        case UserUpserted():
            previous = state if isinstance(state, UserState) else None
            return UserState(
                id=event.user_id,
                workspace_id=event.workspace_id,
                external_id=event.external_id,
                name=event.name,
                email=event.email,
                avatar_url=event.avatar_url,
                metadata=dict(event.metadata),
                created_at=previous.created_at if previous else event.at,
                updated_at=event.at,
                banned=previous.banned if previous else False,
            )
        case UserBanned() if isinstance(state, UserState):
            return replace(state, banned=True, updated_at=event.at)
        case UserUnbanned() if isinstance(state, UserState):
            return replace(state, banned=False, updated_at=event.at)
        case UserErased() if isinstance(state, UserState):
            return replace(state, **erased_profile(event.at))
        case SessionIssued():
            return SessionState(
                id=event.session_id,
                workspace_id=event.workspace_id,
                user_id=event.user_id,
                expires_at=event.expires_at,
            )
        case SessionRevoked() if isinstance(state, SessionState):
            return replace(state, revoked=True)
    return state


# -- helpers -------------------------------------------------------------------------------


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


def live_user(state: State, workspace_id: str) -> UserState:
    """The workspace's user in ``state``, or NotFound (unknown, another workspace's, erased)."""
    if not isinstance(state, UserState) or state.workspace_id != workspace_id or state.erased:
        raise NotFound("User not found.")
    return state


def _workspace(state: State, workspace_id: str) -> WorkspaceState:
    if not isinstance(state, WorkspaceState) or state.id != workspace_id:
        raise NotFound("Workspace not found.")
    return state


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
) -> UserUpserted | None:
    """A ``user.upserted`` carrying the complete new profile, or None if nothing changes."""
    if (
        user is not None
        and user.name == name
        and user.email == email
        and user.avatar_url == avatar_url
        and user.metadata == metadata
    ):
        return None
    return UserUpserted(
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


# -- workspaces and API keys ---------------------------------------------------------------


def decide_create_workspace(
    command: CreateWorkspace,
    state: State,
    now: datetime,
    *,
    workspace_id: str,
    app_key: str,
    app_secret: str,
) -> WorkspaceCreated:
    if state is not None:
        raise Conflict("A workspace with this id exists already.")
    return WorkspaceCreated(
        workspace_id=workspace_id,
        name=command.input.name,
        app_key=app_key,
        app_secret=app_secret,
        at=now,
    )


def decide_issue_api_key(
    workspace: State,
    state: State,
    now: datetime,
    *,
    workspace_id: str,
    key_id: str,
    prefix: str,
    key_hash: str,
) -> ApiKeyIssued:
    _workspace(workspace, workspace_id)
    if state is not None:
        raise Conflict("An API key with this id exists already.")
    return ApiKeyIssued(
        workspace_id=workspace_id, key_id=key_id, prefix=prefix, key_hash=key_hash, at=now
    )


def decide_revoke_api_key(
    workspace_id: str, key_id: str, state: State, now: datetime
) -> ApiKeyRevoked | None:
    if not isinstance(state, ApiKeyState) or state.workspace_id != workspace_id:
        raise NotFound("API key not found.")
    if state.revoked:
        return None
    return ApiKeyRevoked(workspace_id=workspace_id, key_id=key_id, at=now)


# -- users ---------------------------------------------------------------------------------


def decide_upsert_user(
    command: UpsertUser, state: State, now: datetime, *, user_id: str
) -> UserUpserted | None:
    """Create the user, or update the fields given; fields left out (None) stay as they are."""
    data = command.input
    check_metadata(data.metadata)
    user = state if isinstance(state, UserState) else None
    if user is not None and user.erased:
        raise Conflict("This user was erased; an erased user cannot be created again.")
    if user is None:
        return _upserted(
            None,
            workspace_id=command.workspace_id,
            user_id=user_id,
            external_id=data.external_id,
            name=data.name,
            email=data.email,
            avatar_url=data.avatar_url,
            metadata=dict(data.metadata or {}),
            now=now,
        )
    return _upserted(
        user,
        workspace_id=user.workspace_id,
        user_id=user.id,
        external_id=user.external_id,
        name=data.name,
        email=data.email if data.email is not None else user.email,
        avatar_url=data.avatar_url if data.avatar_url is not None else user.avatar_url,
        metadata=dict(data.metadata) if data.metadata is not None else dict(user.metadata),
        now=now,
    )


def decide_update_user(command: UpdateUser, state: State, now: datetime) -> UserUpserted | None:
    """PATCH: UNSET keeps a field, None clears it (metadata becomes empty)."""
    user = live_user(state, command.workspace_id)
    patch = command.patch
    if not isinstance(patch.metadata, msgspec.UnsetType):
        check_metadata(patch.metadata)

    def pick(value: Any, current: Any) -> Any:
        return current if isinstance(value, msgspec.UnsetType) else value

    metadata = pick(patch.metadata, user.metadata)
    return _upserted(
        user,
        workspace_id=user.workspace_id,
        user_id=user.id,
        external_id=user.external_id,
        name=pick(patch.name, user.name),
        email=pick(patch.email, user.email),
        avatar_url=pick(patch.avatar_url, user.avatar_url),
        metadata=dict(metadata or {}),
        now=now,
    )


def decide_set_user_ban(
    command: SetUserBan, state: State, now: datetime
) -> UserBanned | UserUnbanned | None:
    user = live_user(state, command.workspace_id)
    if user.banned == command.banned:
        return None
    if command.banned:
        return UserBanned(workspace_id=user.workspace_id, user_id=user.id, at=now)
    return UserUnbanned(workspace_id=user.workspace_id, user_id=user.id, at=now)


def decide_erase_user(workspace_id: str, state: State, now: datetime) -> UserErased:
    user = live_user(state, workspace_id)
    return UserErased(workspace_id=user.workspace_id, user_id=user.id, at=now)


# -- sessions ------------------------------------------------------------------------------


def decide_issue_session(
    command: IssueSession,
    user: State,
    state: State,
    now: datetime,
    *,
    session_id: str,
    prefix: str,
    token_hash: str,
) -> SessionIssued:
    """A session for a live user of the workspace; banned users get one too (read-only)."""
    owner = live_user(user, command.workspace_id)
    if owner.id != command.input.user_id:
        raise NotFound("User not found.")
    if state is not None:
        raise Conflict("A session with this id exists already.")
    return SessionIssued(
        workspace_id=command.workspace_id,
        session_id=session_id,
        user_id=owner.id,
        prefix=prefix,
        token_hash=token_hash,
        expires_at=now + timedelta(seconds=command.input.ttl_seconds),
        at=now,
    )


def decide_revoke_session(workspace_id: str, state: State, now: datetime) -> SessionRevoked:
    """A revoked session is gone: revoking it again is NotFound, as for an unknown one."""
    if not isinstance(state, SessionState) or state.workspace_id != workspace_id or state.revoked:
        raise NotFound("Session not found.")
    return SessionRevoked(workspace_id=workspace_id, session_id=state.id, at=now)


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
