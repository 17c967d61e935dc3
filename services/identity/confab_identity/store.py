"""The identity read model: tables in schema ``identity`` and the queries on them.

Written only by ``IdentityProjection``; every row keeps the stream ``seq`` of
the event that last wrote it. Queries always filter by workspace, and the
authentication lookups are one indexed SELECT each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from confab.contracts.identity import (
    ApiKeyInfo,
    AppCredentials,
    Invitation,
    StaffMember,
    User,
    Workspace,
)

SCHEMA = "identity"


@dataclass(frozen=True)
class Tables:
    workspaces: sa.Table
    api_keys: sa.Table
    users: sa.Table
    sessions: sa.Table
    staff: sa.Table
    invitations: sa.Table

    def all(self) -> tuple[sa.Table, ...]:
        return (
            self.workspaces,
            self.api_keys,
            self.users,
            self.sessions,
            self.staff,
            self.invitations,
        )


def define_tables(metadata: sa.MetaData) -> Tables:
    """The read model's tables on ``metadata`` (a projection instance brings its own)."""
    ts = sa.DateTime(timezone=True)
    workspaces = sa.Table(
        "workspaces",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("app_key", sa.Text, nullable=False, unique=True),
        sa.Column("app_secret", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    api_keys = sa.Table(
        "api_keys",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False, index=True),
        sa.Column("prefix", sa.Text, nullable=False, unique=True),
        sa.Column("key_hash", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("revoked_at", ts, nullable=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    users = sa.Table(
        "users",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("external_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=True),
        sa.Column("avatar_url", sa.Text, nullable=True),
        # JSON, not JSONB: keeps the tenant's key order as given.
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("banned", sa.Boolean, nullable=False),
        sa.Column("erased", sa.Boolean, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("banned_until", ts, nullable=True),  # a timed ban's end
        sa.UniqueConstraint("workspace_id", "external_id", name="users_workspace_external_id"),
        # Timed bans due to lift (``unbans``).
        sa.Index(
            "users_ban_ends", "banned_until", postgresql_where=sa.text("banned_until IS NOT NULL")
        ),
        # The tenant's directory: by last change (ListUsers), and by email.
        sa.Index("users_workspace_updated", "workspace_id", "updated_at", "id"),
        sa.Index("users_workspace_email", "workspace_id", "email"),
    )
    sessions = sa.Table(
        "sessions",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False, index=True),
        sa.Column("prefix", sa.Text, nullable=False, unique=True),
        sa.Column("token_hash", sa.Text, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("revoked_at", ts, nullable=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        # A staff member's dashboard session (added for issue 19: older rows are widgets').
        sa.Column("dashboard", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    staff = sa.Table(
        "staff",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),  # the staff member's user id
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("joined_at", ts, nullable=False),
        sa.Column("removed_at", ts, nullable=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Index("staff_workspace", "workspace_id", "removed_at"),
    )
    invitations = sa.Table(
        "invitations",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("prefix", sa.Text, nullable=False, unique=True),
        sa.Column("token_hash", sa.Text, nullable=False),
        sa.Column("by", sa.Text, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("accepted_at", ts, nullable=True),
        sa.Column("revoked_at", ts, nullable=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Index("invitations_workspace", "workspace_id", "created_at"),
    )
    return Tables(workspaces, api_keys, users, sessions, staff, invitations)


METADATA = sa.MetaData(schema=SCHEMA)
TABLES = define_tables(METADATA)


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: str
    workspace_id: str
    key_hash: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    workspace_id: str
    user_id: str
    token_hash: str
    expires_at: datetime
    revoked: bool
    user_erased: bool
    dashboard: bool = False
    role: str | None = None  # a dashboard session's staff member's role; None if not staff


@dataclass(frozen=True, slots=True)
class InvitationRow:
    id: str
    workspace_id: str
    token_hash: str


class Store:
    """Queries of the read model (reads only: the projection writes)."""

    def __init__(self, engine: AsyncEngine, tables: Tables = TABLES) -> None:
        self.engine = engine
        self.t = tables

    async def _one(self, query: sa.Select[Any]) -> sa.Row[Any] | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).first()

    async def api_key_by_prefix(self, prefix: str) -> ApiKeyRow | None:
        k = self.t.api_keys
        row = await self._one(
            sa.select(k.c.id, k.c.workspace_id, k.c.key_hash, k.c.revoked_at).where(
                k.c.prefix == prefix
            )
        )
        if row is None:
            return None
        return ApiKeyRow(row.id, row.workspace_id, row.key_hash, row.revoked_at is not None)

    async def session_by_prefix(self, prefix: str) -> SessionRow | None:
        s, u, st = self.t.sessions, self.t.users, self.t.staff
        row = await self._one(
            sa.select(
                s.c.id,
                s.c.workspace_id,
                s.c.user_id,
                s.c.token_hash,
                s.c.expires_at,
                s.c.revoked_at,
                s.c.dashboard,
                st.c.role,
                sa.func.coalesce(u.c.erased, sa.true()).label("user_erased"),
            )
            .select_from(
                s.outerjoin(u, u.c.id == s.c.user_id).outerjoin(
                    st, sa.and_(st.c.id == s.c.user_id, st.c.removed_at.is_(None))
                )
            )
            .where(s.c.prefix == prefix)
        )
        if row is None:
            return None
        return SessionRow(
            id=row.id,
            workspace_id=row.workspace_id,
            user_id=row.user_id,
            token_hash=row.token_hash,
            expires_at=row.expires_at,
            revoked=row.revoked_at is not None,
            user_erased=bool(row.user_erased),
            dashboard=bool(row.dashboard),
            role=row.role,
        )

    # -- staff ---------------------------------------------------------------------------

    async def staff(self, workspace_id: str) -> list[StaffMember]:
        """The workspace's current staff, by name, with their users' names."""
        st, u = self.t.staff, self.t.users
        query = (
            sa.select(st.c.id, st.c.email, st.c.role, st.c.joined_at, u.c.name)
            .select_from(st.join(u, u.c.id == st.c.id))
            .where(st.c.workspace_id == workspace_id, st.c.removed_at.is_(None))
            .order_by(u.c.name, st.c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            StaffMember(
                user_id=r.id, name=r.name, email=r.email, role=r.role, joined_at=r.joined_at
            )
            for r in rows
        ]

    async def owners(self, workspace_id: str) -> int:
        st = self.t.staff
        query = sa.select(sa.func.count()).where(
            st.c.workspace_id == workspace_id, st.c.role == "owner", st.c.removed_at.is_(None)
        )
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def has_staff(self, workspace_id: str) -> bool:
        st = self.t.staff
        found = await self._one(sa.select(st.c.id).where(st.c.workspace_id == workspace_id))
        return found is not None

    async def live_dashboard_sessions(self, workspace_id: str, user_id: str) -> list[str]:
        s = self.t.sessions
        query = sa.select(s.c.id).where(
            s.c.workspace_id == workspace_id,
            s.c.user_id == user_id,
            s.c.dashboard.is_(True),
            s.c.revoked_at.is_(None),
        )
        async with self.engine.connect() as conn:
            return [r.id for r in (await conn.execute(query)).all()]

    async def invitation_by_prefix(self, prefix: str) -> InvitationRow | None:
        i = self.t.invitations
        row = await self._one(
            sa.select(i.c.id, i.c.workspace_id, i.c.token_hash).where(i.c.prefix == prefix)
        )
        return None if row is None else InvitationRow(row.id, row.workspace_id, row.token_hash)

    async def invitations(self, workspace_id: str, now: datetime) -> list[Invitation]:
        """Pending invitations: not accepted, withdrawn or expired; newest first."""
        i = self.t.invitations
        query = (
            sa.select(i)
            .where(
                i.c.workspace_id == workspace_id,
                i.c.accepted_at.is_(None),
                i.c.revoked_at.is_(None),
                i.c.expires_at > now,
            )
            .order_by(i.c.created_at.desc(), i.c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            Invitation(
                id=r.id,
                email=r.email,
                role=r.role,
                expires_at=r.expires_at,
                created_at=r.created_at,
                by=r.by,
            )
            for r in rows
        ]

    async def api_keys(self, workspace_id: str) -> list[ApiKeyInfo]:
        k = self.t.api_keys
        query = (
            sa.select(k.c.id, k.c.prefix, k.c.created_at, k.c.revoked_at)
            .where(k.c.workspace_id == workspace_id)
            .order_by(k.c.created_at, k.c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            ApiKeyInfo(id=r.id, prefix=r.prefix, created_at=r.created_at, revoked_at=r.revoked_at)
            for r in rows
        ]

    async def user(self, workspace_id: str, user_id: str) -> User | None:
        """A live (not erased) user of the workspace."""
        u = self.t.users
        row = await self._one(
            sa.select(u).where(
                u.c.id == user_id, u.c.workspace_id == workspace_id, u.c.erased.is_(False)
            )
        )
        return None if row is None else _user(row)

    async def users(
        self,
        workspace_id: str,
        *,
        external_id: str | None,
        email: str | None,
        updated_since: datetime | None,
        search: str | None = None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> tuple[list[User], bool]:
        """Live users of the workspace by (updated_at, id), after ``after``; more?"""
        u = self.t.users
        query = sa.select(u).where(u.c.workspace_id == workspace_id, u.c.erased.is_(False))
        if external_id is not None:
            query = query.where(u.c.external_id == external_id)
        if email is not None:
            query = query.where(u.c.email == email)
        if updated_since is not None:
            query = query.where(u.c.updated_at >= updated_since)
        if search:
            pattern = "%" + _like_escaped(search) + "%"
            query = query.where(
                sa.or_(
                    u.c.name.ilike(pattern, escape="\\"),
                    u.c.email.ilike(pattern, escape="\\"),
                    u.c.external_id.ilike(pattern, escape="\\"),
                )
            )
        if after is not None:
            query = query.where(sa.tuple_(u.c.updated_at, u.c.id) > sa.tuple_(*after))
        query = query.order_by(u.c.updated_at, u.c.id).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_user(r) for r in rows[:limit]], len(rows) > limit

    async def workspace(self, workspace_id: str) -> Workspace | None:
        w = self.t.workspaces
        row = await self._one(
            sa.select(w.c.id, w.c.name, w.c.app_key, w.c.created_at).where(w.c.id == workspace_id)
        )
        if row is None:
            return None
        return Workspace(id=row.id, name=row.name, app_key=row.app_key, created_at=row.created_at)

    async def workspaces(self, *, after: str | None, limit: int) -> tuple[list[Workspace], bool]:
        """Up to ``limit`` workspaces with id > ``after`` in id order, and whether more exist."""
        w = self.t.workspaces
        query = sa.select(w.c.id, w.c.name, w.c.app_key, w.c.created_at).order_by(w.c.id)
        if after:
            query = query.where(w.c.id > after)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit + 1))).all()
        items = [
            Workspace(id=r.id, name=r.name, app_key=r.app_key, created_at=r.created_at)
            for r in rows[:limit]
        ]
        return items, len(rows) > limit

    async def app_credentials(
        self, app_key: str | None = None, *, workspace_id: str | None = None
    ) -> AppCredentials | None:
        """By the public app key, or by workspace id."""
        w = self.t.workspaces
        query = sa.select(w.c.id, w.c.app_key, w.c.app_secret)
        if app_key is not None:
            query = query.where(w.c.app_key == app_key)
        if workspace_id is not None:
            query = query.where(w.c.id == workspace_id)
        row = await self._one(query)
        if row is None:
            return None
        return AppCredentials(workspace_id=row.id, app_key=row.app_key, app_secret=row.app_secret)


def _user(row: sa.Row[Any]) -> User:
    # A timed ban is over at its end, as messaging and the fanout judge it, even before
    # identity's schedule has stored the ``user.unbanned`` that lifts it (``unbans``).
    until = row._mapping.get("banned_until")
    return User(
        id=row.id,
        external_id=row.external_id,
        name=row.name,
        email=row.email,
        avatar_url=row.avatar_url,
        metadata=row._mapping["metadata"] or {},
        banned=row.banned and (until is None or until > datetime.now(UTC)),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _like_escaped(text: str) -> str:
    """``text`` taken literally in a LIKE pattern with escape character backslash."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
