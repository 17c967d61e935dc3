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
Search = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
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
    # Part of the name, email or external id, any case (the dashboard's user search).
    q: Search | None = None
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


# -- staff: roles, invitations, passwords and dashboard sessions (issue 19) ----------------

RoleName = Annotated[str, msgspec.Meta(pattern=r"^(owner|admin|agent|moderator)$")]
# Long enough to resist guessing, short enough that argon2 never hashes megabytes.
Password = Annotated[str, msgspec.Meta(min_length=10, max_length=200)]
LinkToken = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
INVITATION_TTL = 7 * 24 * 3600
DASHBOARD_SESSION_TTL = 12 * 3600


class StaffPrincipal(Reply, kw_only=True, frozen=True):
    """A dashboard session: the staff member, their role now, and the session."""

    workspace_id: str
    session_id: str
    user_id: str
    role: str
    expires_at: datetime


class StaffMember(Reply, kw_only=True, frozen=True):
    user_id: str
    name: str
    email: str
    role: str
    joined_at: datetime


class StaffList(Reply, kw_only=True, frozen=True):
    data: list[StaffMember]


class Invitation(Reply, kw_only=True, frozen=True):
    id: str
    email: str
    role: str
    expires_at: datetime
    created_at: datetime
    by: str = ""


class InvitationWithToken(Reply, kw_only=True, frozen=True):
    """Shown once, to the inviter: the token goes into the link, never stored in clear."""

    invitation: Invitation
    token: str


class InvitationList(Reply, kw_only=True, frozen=True):
    data: list[Invitation]


class DashboardSession(Reply, kw_only=True, frozen=True):
    """A new dashboard session: the token goes into the cookie, never into a body."""

    token: str
    principal: StaffPrincipal
    member: StaffMember


class ApiKeyInfo(Reply, kw_only=True, frozen=True):
    id: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyList(Reply, kw_only=True, frozen=True):
    data: list[ApiKeyInfo]


class InvitationInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    email: Email
    role: RoleName


class AcceptInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    token: LinkToken
    name: Name
    password: Password


class SignInInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    workspace_id: Id
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=254)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class RoleInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    role: RoleName


class OwnerInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    email: Email
    name: Name
    password: Password


class InviteStaff(Request, kw_only=True, frozen=True):
    """``by``: the inviting staff member's user id; None for an API key or the CLI."""

    subject: ClassVar[str] = "identity.cmd.invite_staff"
    reply: ClassVar[type[msgspec.Struct]] = InvitationWithToken
    workspace_id: str
    input: InvitationInput
    by: str | None = None


class RevokeInvitation(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.cmd.revoke_invitation"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    workspace_id: str
    invitation_id: str
    by: str | None = None


class ListInvitations(Request, kw_only=True, frozen=True):
    """Invitations not yet accepted, revoked or expired."""

    subject: ClassVar[str] = "identity.q.list_invitations"
    reply: ClassVar[type[msgspec.Struct]] = InvitationList
    workspace_id: str


class AcceptInvitation(Request, kw_only=True, frozen=True):
    """By the link's token (its prefix and hash); the password travels to identity only."""

    subject: ClassVar[str] = "identity.cmd.accept_invitation"
    reply: ClassVar[type[msgspec.Struct]] = DashboardSession
    prefix: str
    token_hash: str
    name: Name
    password: Password


class CreateOwner(Request, kw_only=True, frozen=True):
    """The workspace's first owner (``confab workspace create --owner``, ``confab up``):
    refused once the workspace has staff."""

    subject: ClassVar[str] = "identity.cmd.create_owner"
    reply: ClassVar[type[msgspec.Struct]] = StaffMember
    workspace_id: str
    input: OwnerInput


class StaffSignIn(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.cmd.staff_sign_in"
    reply: ClassVar[type[msgspec.Struct]] = DashboardSession
    input: SignInInput


class AuthenticateStaffSession(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.q.authenticate_staff_session"
    reply: ClassVar[type[msgspec.Struct]] = StaffPrincipal
    prefix: str
    token_hash: str


class SignOutEverywhere(Request, kw_only=True, frozen=True):
    """Revoke every live dashboard session of the staff member."""

    subject: ClassVar[str] = "identity.cmd.sign_out_everywhere"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    workspace_id: str
    user_id: str


class ListStaff(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.q.list_staff"
    reply: ClassVar[type[msgspec.Struct]] = StaffList
    workspace_id: str


class ChangeStaffRole(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.cmd.change_staff_role"
    reply: ClassVar[type[msgspec.Struct]] = StaffMember
    workspace_id: str
    user_id: str
    role: RoleName
    by: str | None = None


class RemoveStaff(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.cmd.remove_staff"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    workspace_id: str
    user_id: str
    by: str | None = None


class ListApiKeys(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.q.list_api_keys"
    reply: ClassVar[type[msgspec.Struct]] = ApiKeyList
    workspace_id: str
