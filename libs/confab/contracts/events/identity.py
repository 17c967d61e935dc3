"""Identity's stored events: workspaces, API keys, chat users, sessions and staff.

Subjects in ``IDENTITY``: ``identity.evt.<workspace>.<kind>.<id>`` with kind
``workspace``, ``api_key``, ``user`` or ``session``; each subject is one
aggregate. A user's id is derived from its workspace and ``external_id``
(``confab_identity.domain.user_id_for``), so two concurrent upserts of one
external id meet on one subject and the log's optimistic concurrency keeps
them to one user.

A ``user.upserted`` carries the whole profile after the change; its personal
fields are sealed with the user's key (``confab.personal``), so an erasure
(the key purged, then ``user.erased``) leaves nothing readable behind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from confab.contracts.events.base import Event


def subject(workspace_id: str, kind: str, entity_id: str) -> str:
    return f"identity.evt.{workspace_id}.{kind}.{entity_id}"


Metadata = dict[str, Any]


class WorkspaceCreated(Event, kw_only=True, frozen=True):
    type = "workspace.created"
    workspace_id: str
    name: str
    app_key: str
    # The Pusher app secret signs channel authorisations; the fanout needs it in clear.
    app_secret: str
    at: datetime


class ApiKeyIssued(Event, kw_only=True, frozen=True):
    type = "api_key.issued"
    workspace_id: str
    key_id: str
    prefix: str
    key_hash: str
    at: datetime


class ApiKeyRevoked(Event, kw_only=True, frozen=True):
    type = "api_key.revoked"
    workspace_id: str
    key_id: str
    at: datetime


class UserUpserted(Event, kw_only=True, frozen=True):
    type = "user.upserted"
    personal = ("name", "email", "avatar_url", "metadata")
    owner = "user_id"
    workspace_id: str
    user_id: str
    external_id: str
    name: str
    email: str | None = None
    avatar_url: str | None = None
    metadata: Metadata = {}
    created: bool = False
    at: datetime
    sealed: str | None = None


class UserErased(Event, kw_only=True, frozen=True):
    type = "user.erased"
    workspace_id: str
    user_id: str
    at: datetime


class UserBanned(Event, kw_only=True, frozen=True):
    type = "user.banned"
    workspace_id: str
    user_id: str
    at: datetime
    # A timed ban: identity appends the user.unbanned itself once this has passed
    # (``confab_identity.unbans``); None: until lifted by hand.
    until: datetime | None = None


class UserUnbanned(Event, kw_only=True, frozen=True):
    type = "user.unbanned"
    workspace_id: str
    user_id: str
    at: datetime


class SessionIssued(Event, kw_only=True, frozen=True):
    type = "session.issued"
    workspace_id: str
    session_id: str
    user_id: str
    prefix: str
    token_hash: str
    expires_at: datetime
    at: datetime
    # A staff member's dashboard session (cookie), not a widget's bearer token.
    dashboard: bool = False


class SessionRevoked(Event, kw_only=True, frozen=True):
    type = "session.revoked"
    workspace_id: str
    session_id: str
    at: datetime


# -- staff: workspace members with a role and a password (issue 19) -------------------------
#
# Subjects: ``identity.evt.<ws>.staff.<user_id>`` (one staff member, keyed by their user
# id: the workspace's user ``staff:<email>``) and ``identity.evt.<ws>.invitation.<id>``.
# Their dashboard sessions are ``session`` aggregates with ``dashboard`` set, so revoking
# one is the ``session.revoked`` every enforcing process already follows.


class InvitationCreated(Event, kw_only=True, frozen=True):
    type = "invitation.created"
    workspace_id: str
    invitation_id: str
    email: str
    role: str
    prefix: str  # of the link's token; the token itself is shown once, to the inviter
    token_hash: str
    expires_at: datetime
    by: str  # the inviting staff member's user id, or "" for the CLI / admin API
    at: datetime


class InvitationAccepted(Event, kw_only=True, frozen=True):
    type = "invitation.accepted"
    workspace_id: str
    invitation_id: str
    user_id: str
    at: datetime


class InvitationRevoked(Event, kw_only=True, frozen=True):
    type = "invitation.revoked"
    workspace_id: str
    invitation_id: str
    by: str
    at: datetime


class StaffJoined(Event, kw_only=True, frozen=True):
    """A user of the workspace became staff (by an invitation, or as the first owner)."""

    type = "staff.joined"
    personal = ("email", "password_hash")
    owner = "user_id"
    workspace_id: str
    user_id: str
    email: str
    role: str
    password_hash: str  # argon2id (PHC string); sealed with the user's key
    invitation_id: str | None = None
    at: datetime
    sealed: str | None = None


class StaffRoleChanged(Event, kw_only=True, frozen=True):
    type = "staff.role_changed"
    workspace_id: str
    user_id: str
    role: str
    by: str
    at: datetime


class StaffRemoved(Event, kw_only=True, frozen=True):
    type = "staff.removed"
    workspace_id: str
    user_id: str
    by: str
    at: datetime


class StaffSignInFailed(Event, kw_only=True, frozen=True):
    """A wrong password for this account; ``locked_until`` is set by the one that locks it."""

    type = "staff.sign_in_failed"
    workspace_id: str
    user_id: str
    locked_until: datetime | None = None
    at: datetime


class StaffSignedIn(Event, kw_only=True, frozen=True):
    """A right password: the failures before it no longer count."""

    type = "staff.signed_in"
    workspace_id: str
    user_id: str
    session_id: str
    at: datetime


# -- support settings and agents' availability (issue 19): ``identity.evt.<ws>.support.<ws>`` --

ReplyTime = Literal["minutes", "hour", "day"]
PrechatField = Literal["off", "optional", "required"]
AgentStatus = Literal["online", "away"]


class SupportSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A workspace's "Send us a message": what the widget shows before the first message,
    who may write without being identified, and how conversations are assigned."""

    enabled: bool = False
    greeting: Annotated[str, msgspec.Meta(max_length=500)] = ""
    team_name: Annotated[str, msgspec.Meta(max_length=100)] = ""
    team_avatars: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https://[^\s]+$")]],
        msgspec.Meta(max_length=5),
    ] = []
    reply_time: ReplyTime = "hour"  # "typically replies in …" while someone is online
    prechat_name: PrechatField = "off"
    prechat_email: PrechatField = "off"
    allow_anonymous: bool = False  # visitor sessions from the public widget key
    # Pages allowed to use the public widget key (scheme://host[:port]), exactly.
    allowed_origins: Annotated[
        list[
            Annotated[
                str,
                msgspec.Meta(max_length=300, pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$"),
            ]
        ],
        msgspec.Meta(max_length=50),
    ] = []
    round_robin: bool = False  # assign new support conversations among online agents


class SupportConfigured(Event, kw_only=True, frozen=True):
    """The workspace's support settings, whole, after the change."""

    type = "workspace.support_configured"
    workspace_id: str
    settings: SupportSettings
    by: str = ""  # the API key id, or the staff member
    at: datetime


class AgentAvailabilitySet(Event, kw_only=True, frozen=True):
    type = "agent.availability_set"
    workspace_id: str
    user_id: str
    status: AgentStatus
    at: datetime
