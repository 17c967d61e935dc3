"""Identity's requests and replies: workspaces, API keys, chat users and widget sessions.

What identity stores (and the subjects of ``IDENTITY``) is in
``confab.contracts.events.identity``; what is here may change with the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

import msgspec

from confab.contracts.base import Ok, PageLimit, Reply, Request, StreamSeq, TimeCursor
from confab.contracts.events.identity import Metadata

# -- field types: the public API validates with these ---------------------------------

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
WorkspaceName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
ExternalId = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Email = Annotated[
    str, msgspec.Meta(max_length=254, pattern=r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")
]
Url = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://[^\s]+$")]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
TtlSeconds = Annotated[int, msgspec.Meta(ge=60, le=30 * 24 * 3600)]

METADATA_MAX_BYTES = 8 * 1024
DEFAULT_SESSION_TTL = 24 * 3600


# -- public objects (API bodies and RPC replies) ---------------------------------------------


class Workspace(Reply, kw_only=True, frozen=True):
    id: str
    name: str
    app_key: str
    created_at: datetime


class WorkspaceWithSecrets(Reply, kw_only=True, frozen=True):
    """Shown once, at creation: the only time the API key and app secret are readable."""

    id: str
    name: str
    api_key: str
    app_key: str
    app_secret: str
    # The all-digit alias of ``id`` that Pusher server SDKs take as ``app_id``.
    pusher_app_id: str = ""
    created_at: datetime


class WorkspaceList(Reply, kw_only=True, frozen=True):
    data: list[Workspace]
    has_more: bool
    next_cursor: str | None = None


class ApiKey(Reply, kw_only=True, frozen=True):
    id: str
    workspace_id: str
    api_key: str
    created_at: datetime


class User(Reply, kw_only=True, frozen=True):
    id: str
    external_id: str
    name: str
    email: str | None = None
    avatar_url: str | None = None
    metadata: Metadata = {}
    banned: bool = False
    created_at: datetime
    updated_at: datetime


class UserList(Reply, kw_only=True, frozen=True):
    data: list[User]
    has_more: bool
    next_cursor: str | None = None


class UserSaved(Reply, kw_only=True, frozen=True):
    user: User
    created: bool
    seq: int


class Session(Reply, kw_only=True, frozen=True):
    token: str
    expires_at: datetime
    user: User


class ApiKeyPrincipal(Reply, kw_only=True, frozen=True):
    workspace_id: str
    key_id: str


class SessionPrincipal(Reply, kw_only=True, frozen=True):
    workspace_id: str
    session_id: str
    user_id: str
    expires_at: datetime


class AppCredentials(Reply, kw_only=True, frozen=True):
    workspace_id: str
    app_key: str
    app_secret: str


# -- request bodies of the public API ---------------------------------------------------------


class WorkspaceInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    name: WorkspaceName


class UserInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    external_id: ExternalId
    name: Name
    email: Email | None = None
    avatar_url: Url | None = None
    metadata: Metadata | None = None


class UserPatch(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Fields left out stay as they are; ``null`` clears an optional one."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    email: Email | msgspec.UnsetType | None = msgspec.UNSET
    avatar_url: Url | msgspec.UnsetType | None = msgspec.UNSET
    metadata: Metadata | msgspec.UnsetType | None = msgspec.UNSET


class SessionInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    user_id: Id
    ttl_seconds: TtlSeconds = DEFAULT_SESSION_TTL


# -- commands and queries (NATS request/reply) ---------------------------------------------------


class CreateWorkspace(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.cmd.create_workspace"
    reply: ClassVar[type[msgspec.Struct]] = WorkspaceWithSecrets
    input: WorkspaceInput
    actor: str = "admin"


class ListWorkspaces(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.q.list_workspaces"
    reply: ClassVar[type[msgspec.Struct]] = WorkspaceList
    limit: PageLimit = 50
    after: Id | None = None


class IssueApiKey(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.cmd.issue_api_key"
    reply: ClassVar[type[msgspec.Struct]] = ApiKey
    workspace_id: str
    actor: str = "admin"


class RevokeApiKey(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.cmd.revoke_api_key"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    workspace_id: str
    key_id: str
    actor: str = "admin"


class AuthenticateApiKey(Request, kw_only=True, frozen=True):
    """The gateway sends the prefix and hash; the key itself never leaves the gateway."""

    subject: ClassVar[str] = "identity.q.authenticate_api_key"
    reply: ClassVar[type[msgspec.Struct]] = ApiKeyPrincipal
    prefix: str
    key_hash: str


class AuthenticateSession(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.q.authenticate_session"
    reply: ClassVar[type[msgspec.Struct]] = SessionPrincipal
    prefix: str
    token_hash: str


class UpsertUser(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.cmd.upsert_user"
    reply: ClassVar[type[msgspec.Struct]] = UserSaved
    workspace_id: str
    input: UserInput
    actor: str = ""


class UpdateUser(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.cmd.update_user"
    reply: ClassVar[type[msgspec.Struct]] = UserSaved
    workspace_id: str
    user_id: str
    patch: UserPatch
    actor: str = ""


class GetUser(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.q.get_user"
    reply: ClassVar[type[msgspec.Struct]] = User
    workspace_id: str
    user_id: str
    min_seq: StreamSeq = 0


class ListUsers(Request, kw_only=True, frozen=True):
    """The workspace's users (never erased ones), oldest change first: by ``updated_at``
    then id, so a sync that asks ``updated_since`` its last run misses nothing."""

    subject: ClassVar[str] = "identity.q.list_users"
    reply: ClassVar[type[msgspec.Struct]] = UserList
    workspace_id: str
    external_id: ExternalId | None = None
    email: Email | None = None
    updated_since: datetime | None = None
    cursor: TimeCursor | None = None
    limit: PageLimit = 50


class EraseUser(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.cmd.erase_user"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    workspace_id: str
    user_id: str
    actor: str = ""


class SetUserBan(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.cmd.set_user_ban"
    reply: ClassVar[type[msgspec.Struct]] = UserSaved
    workspace_id: str
    user_id: str
    banned: bool
    actor: str = ""
    # A timed ban: it lifts itself after this long (None: until lifted).
    duration_seconds: Annotated[int, msgspec.Meta(ge=1, le=10 * 365 * 86400)] | None = None
    if_until: datetime | None = None  # identity's own scheduled unban of a timed ban


class IssueSession(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.cmd.issue_session"
    reply: ClassVar[type[msgspec.Struct]] = Session
    workspace_id: str
    input: SessionInput
    actor: str = ""


class RevokeSession(Request, kw_only=True, frozen=True):
    """By the token the tenant holds: identified by its prefix and hash, never sent in clear."""

    subject: ClassVar[str] = "identity.cmd.revoke_session"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    workspace_id: str
    prefix: str
    token_hash: str
    actor: str = ""


class GetAppCredentials(Request, kw_only=True, frozen=True):
    """For the fanout (by the public app key) and the gateway's channel authorization
    (by workspace id): exactly one of the two."""

    subject: ClassVar[str] = "identity.q.get_app_credentials"
    reply: ClassVar[type[msgspec.Struct]] = AppCredentials
    app_key: str | None = None
    workspace_id: str | None = None


class GetWorkspace(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.q.get_workspace"
    reply: ClassVar[type[msgspec.Struct]] = Workspace
    workspace_id: str
