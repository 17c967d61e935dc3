"""Workspace staff roles and what each may do: the one permission table (issue 19).

A staff member is a user of the workspace with a role and a password. Their
dashboard session calls the tenant API (``auth="api_key"`` routes) under the
permission each route names (``Endpoint.permission``); a tenant API key grants
every permission. The table is documented in ``docs/staff.md``; the gateway
(routes), identity (who may change whose role) and the fanout (who may watch a
conversation channel) all read it from here.
"""

from __future__ import annotations

from typing import Literal

Role = Literal["owner", "admin", "agent", "moderator"]
ROLES: tuple[Role, ...] = ("owner", "admin", "agent", "moderator")

CONVERSATIONS_READ = "conversations.read"
CONVERSATIONS_REPLY = "conversations.reply"
MODERATION = "moderation"
USERS_BAN = "users.ban"
USERS_ERASE = "users.erase"
KEYS_MANAGE = "keys.manage"
WEBHOOKS_MANAGE = "webhooks.manage"
SETTINGS_MANAGE = "settings.manage"
STAFF_MANAGE = "staff.manage"

PERMISSIONS: tuple[str, ...] = (
    CONVERSATIONS_READ,
    CONVERSATIONS_REPLY,
    MODERATION,
    USERS_BAN,
    USERS_ERASE,
    KEYS_MANAGE,
    WEBHOOKS_MANAGE,
    SETTINGS_MANAGE,
    STAFF_MANAGE,
)

_ADMIN = frozenset(PERMISSIONS)
GRANTS: dict[str, frozenset[str]] = {
    "owner": _ADMIN,
    "admin": _ADMIN,
    "agent": frozenset({CONVERSATIONS_READ, CONVERSATIONS_REPLY}),
    "moderator": frozenset({CONVERSATIONS_READ, MODERATION, USERS_BAN}),
}


def grants(role: str | None, permission: str) -> bool:
    """Whether ``role`` grants ``permission``; an unknown role grants nothing."""
    return role is not None and permission in GRANTS.get(role, frozenset())


def permissions_of(role: str) -> list[str]:
    """The permissions of ``role`` in the table's order (what the dashboard shows)."""
    granted = GRANTS.get(role, frozenset())
    return [p for p in PERMISSIONS if p in granted]


def may_manage(actor_role: str, target_role: str) -> bool:
    """Whether a staff member with ``actor_role`` may invite, re-role or remove someone
    with ``target_role`` (or give that role): ``staff.manage``, and only an owner
    touches owners."""
    if not grants(actor_role, STAFF_MANAGE):
        return False
    return target_role != "owner" or actor_role == "owner"
