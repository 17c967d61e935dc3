"""The identity read model, projected from ``IDENTITY``.

Every value written comes from the event (times from its ``at``), never from
the database clock, so replaying the stream into empty tables gives the same
rows. Each write is guarded by the row's ``seq``: an event older than what a
row already reflects changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from confab.bus import IDENTITY
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
    UserBanned,
    UserErased,
    UserUnbanned,
    UserUpserted,
    WorkspaceCreated,
)
from confab.events import Envelope
from confab.personal import KeyRing
from confab.projection import Projection
from confab_identity.erasure import erased_profile
from confab_identity.store import SCHEMA, Tables, define_tables
from confab_identity.support import SupportSetupProjection


def read_model(schema: str = SCHEMA, keys: KeyRing | None = None) -> list[Projection]:
    """The projections of schema ``identity`` (entry point ``confab.projections``), built
    on ``schema``: the CLI rebuilds and verifies them in a scratch schema."""
    return [IdentityProjection(schema=schema, keys=keys), SupportSetupProjection(schema=schema)]


class IdentityProjection(Projection):
    """Workspaces, API keys, users, sessions, staff and invitations; ``schema`` differs
    only for a rebuild."""

    stream = IDENTITY.name
    subjects = IDENTITY.subjects

    def __init__(
        self, name: str = "identity", schema: str = SCHEMA, keys: KeyRing | None = None
    ) -> None:
        self.name = name
        self.keys = keys  # reveals sealed profiles; without it they read as erased
        # Each instance has its own MetaData, so a rebuild can run next to the live one.
        self.metadata = sa.MetaData(schema=schema)
        self.tables: Tables = define_tables(self.metadata)
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        if self.keys is not None:
            events = await self.keys.reveal_all(events)
        for envelope in events:
            await self._apply(conn, envelope.event, envelope.seq)

    async def _apply(self, conn: AsyncConnection, event: Any, seq: int) -> None:
        t = self.tables
        match event:
            case WorkspaceCreated():
                await self._insert(
                    conn,
                    t.workspaces,
                    id=event.workspace_id,
                    name=event.name,
                    app_key=event.app_key,
                    app_secret=event.app_secret,
                    created_at=event.at,
                    seq=seq,
                )
            case ApiKeyIssued():
                await self._insert(
                    conn,
                    t.api_keys,
                    id=event.key_id,
                    workspace_id=event.workspace_id,
                    prefix=event.prefix,
                    key_hash=event.key_hash,
                    created_at=event.at,
                    revoked_at=None,
                    seq=seq,
                )
            case ApiKeyRevoked():
                await self._update(conn, t.api_keys, event.key_id, seq, revoked_at=event.at)
            case UserUpserted():
                profile = {
                    "name": event.name,
                    "email": event.email,
                    "avatar_url": event.avatar_url,
                    "metadata": dict(event.metadata),
                    "updated_at": event.at,
                    "seq": seq,
                }
                stmt = insert(t.users).values(
                    id=event.user_id,
                    workspace_id=event.workspace_id,
                    external_id=event.external_id,
                    banned=False,
                    erased=False,
                    created_at=event.at,
                    **profile,
                )
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[t.users.c.id],
                        set_={k: stmt.excluded[k] for k in profile},
                        where=t.users.c.seq < stmt.excluded.seq,
                    )
                )
            case UserBanned() | UserUnbanned():
                banned = isinstance(event, UserBanned)
                until = event.until if isinstance(event, UserBanned) else None
                await self._update(
                    conn,
                    t.users,
                    event.user_id,
                    seq,
                    banned=banned,
                    banned_until=until,
                    updated_at=event.at,
                )
            case UserErased():
                await self._update(conn, t.users, event.user_id, seq, **erased_profile(event.at))
                # An erased staff member leaves the team, and their email with them.
                await conn.execute(
                    t.staff.update()
                    .where(t.staff.c.id == event.user_id, t.staff.c.removed_at.is_(None))
                    .values(email="", removed_at=event.at)
                )
            case SessionIssued():
                await self._insert(
                    conn,
                    t.sessions,
                    id=event.session_id,
                    workspace_id=event.workspace_id,
                    user_id=event.user_id,
                    prefix=event.prefix,
                    token_hash=event.token_hash,
                    expires_at=event.expires_at,
                    created_at=event.at,
                    revoked_at=None,
                    seq=seq,
                    dashboard=event.dashboard,
                )
            case SessionRevoked():
                await self._update(conn, t.sessions, event.session_id, seq, revoked_at=event.at)
            case StaffJoined():
                await self._insert(
                    conn,
                    t.staff,
                    id=event.user_id,
                    workspace_id=event.workspace_id,
                    email=event.email,
                    role=event.role,
                    joined_at=event.at,
                    removed_at=None,
                    seq=seq,
                )
            case StaffRoleChanged():
                await self._update(conn, t.staff, event.user_id, seq, role=event.role)
            case StaffRemoved():
                await self._update(conn, t.staff, event.user_id, seq, removed_at=event.at)
            case InvitationCreated():
                await self._insert(
                    conn,
                    t.invitations,
                    id=event.invitation_id,
                    workspace_id=event.workspace_id,
                    email=event.email,
                    role=event.role,
                    prefix=event.prefix,
                    token_hash=event.token_hash,
                    by=event.by,
                    expires_at=event.expires_at,
                    created_at=event.at,
                    accepted_at=None,
                    revoked_at=None,
                    seq=seq,
                )
            case InvitationAccepted():
                await self._update(
                    conn, t.invitations, event.invitation_id, seq, accepted_at=event.at
                )
            case InvitationRevoked():
                await self._update(
                    conn, t.invitations, event.invitation_id, seq, revoked_at=event.at
                )

    @staticmethod
    async def _insert(conn: AsyncConnection, table: sa.Table, **values: Any) -> None:
        stmt = insert(table).values(**values)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c.id],
                set_={k: stmt.excluded[k] for k in values if k != "id"},
                where=table.c.seq < stmt.excluded.seq,
            )
        )

    @staticmethod
    async def _update(
        conn: AsyncConnection, table: sa.Table, row_id: str, seq: int, **values: Any
    ) -> None:
        await conn.execute(
            table.update().where(table.c.id == row_id, table.c.seq < seq).values(**values, seq=seq)
        )
