"""Identity's stored events: workspaces, API keys, chat users and widget sessions.

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
from typing import Any

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


class SessionRevoked(Event, kw_only=True, frozen=True):
    type = "session.revoked"
    workspace_id: str
    session_id: str
    at: datetime
