"""Identity's staff side: invitations, passwords, roles and dashboard sessions (issue 19).

A staff member is a user of the workspace (external id ``staff:<email>``, so one per
email) plus a ``staff`` aggregate keyed by that user's id: role, argon2id password
hash, failed sign-ins and lockout. Their dashboard sessions are ``session``
aggregates with ``dashboard`` set: revoking one (sign-out, sign-out everywhere,
removal) is the ``session.revoked`` every gateway and fanout node already follows,
so cached principals and sockets end before the reply leaves. A role change or a
removal is followed too (``confab.authority``): the gateway forgets the member's
cached sessions and the fanout closes their sockets, which sign in again with
the new role.

Steps that span aggregates run in an order that fails safe: accepting an
invitation spends it first (its subject's optimistic concurrency makes the link
single-use), then makes the user, then the staff member, then the session; a
crash in between leaves a spent link and no account, and the inviter invites
again. Passwords are hashed and verified off the event loop (argon2 takes tens of
milliseconds on purpose); they never reach a log line or an event in clear.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from confab.aggregate import Executed
from confab.authority import fence
from confab.contracts.base import Ok
from confab.contracts.events.identity import SessionIssued, subject
from confab.contracts.identity import (
    DASHBOARD_SESSION_TTL,
    INVITATION_TTL,
    AcceptInvitation,
    ChangeStaffRole,
    CreateOwner,
    DashboardSession,
    Invitation,
    InvitationWithToken,
    InviteStaff,
    RemoveStaff,
    RevokeInvitation,
    SignOutEverywhere,
    StaffMember,
    StaffPrincipal,
    StaffSignIn,
)
from confab.errors import Conflict, Forbidden, InternalError, NotFound, Unauthorized
from confab.ids import is_valid_id, new_id, new_secret, same_secret, secret_hash, secret_prefix
from confab.logging import get_logger
from confab.projection import ProjectionRunner
from confab.rpc import CallContext
from confab.shell import CommandShell, Intent, Route
from confab_identity import domain
from confab_identity.domain import StaffState
from confab_identity.handlers import utcnow, valid
from confab_identity.store import Store

log = get_logger("confab_identity.staff")

# argon2id with argon2-cffi's RFC 9106 "low memory" profile (64 MiB, 3 passes).
HASHER = PasswordHasher()
# Verified against when there is no account, so that a wrong email costs what a wrong
# password costs (no timing difference tells which emails are staff).
_DUMMY_HASH = HASHER.hash("not a password of anyone")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class StaffShells:
    staff: CommandShell[domain.Command, StaffState | None]
    invitations: CommandShell[domain.Command, domain.InvitationState | None]
    users: CommandShell[domain.Command, domain.UserState | None]
    sessions: CommandShell[domain.Command, domain.SessionState | None]
    workspaces: CommandShell[domain.Command, domain.WorkspaceState | None]


class StaffCommands:
    def __init__(
        self,
        shells: StaffShells,
        js: Any,
        store: Store,
        runner: ProjectionRunner,
        *,
        read_wait: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.shells = shells
        self.js = js
        self.store = store
        self.runner = runner
        self.read_wait = read_wait
        self.clock = clock

    def routes(self) -> list[Route]:
        return [
            (InviteStaff, self.invite),
            (RevokeInvitation, self.revoke_invitation),
            (AcceptInvitation, self.accept),
            (CreateOwner, self.create_owner),
            (StaffSignIn, self.sign_in),
            (SignOutEverywhere, self.sign_out_everywhere),
            (ChangeStaffRole, self.change_role),
            (RemoveStaff, self.remove),
        ]

    # -- helpers ---------------------------------------------------------------------------

    async def settle(self, seq: int) -> None:
        if not await self.runner.wait_for(seq, self.read_wait):
            log.warning("read_model_behind", seq=seq, checkpoint=self.runner.checkpoint)

    async def enforce(self, seq: int) -> None:
        """Read-your-writes, and in force at every gateway and fanout node."""
        await self.settle(seq)
        await fence(self.js, seq, timeout=self.read_wait)

    async def _fresh(self, shell: CommandShell[Any, Any], where: str) -> Any:
        state, _ = await shell.aggregates.load(where, fresh=True)
        return state

    async def _by_role(self, workspace_id: str, by: str | None) -> str | None:
        """The acting staff member's role now, from the log (None: an API key, all rights)."""
        if by is None:
            return None
        state = await self._fresh(self.shells.staff, subject(workspace_id, "staff", by))
        if state is None or state.removed or state.workspace_id != workspace_id:
            raise Forbidden("You are no longer on this workspace's team.")
        role: str = state.role
        return role

    async def _member(self, state: StaffState) -> StaffMember:
        users = self.shells.users
        user = await self._fresh(users, subject(state.workspace_id, "user", state.user_id))
        return StaffMember(
            user_id=state.user_id,
            name=user.name if user is not None else "",
            email=state.email,
            role=state.role,
            joined_at=state.joined_at,
        )

    async def _join(
        self,
        workspace_id: str,
        *,
        email: str,
        name: str,
        password: str,
        role: str,
        invitation_id: str | None,
        ctx: CallContext,
    ) -> Executed[StaffState | None]:
        """Make (or update) the staff member's user, then the staff member."""
        now = self.clock()
        email = email.strip().lower()
        external_id = domain.staff_external_id(email)
        user_id = domain.user_id_for(workspace_id, external_id)
        upsert = domain.UpsertUser(
            workspace_id=workspace_id,
            now=now,
            user_id=user_id,
            external_id=external_id,
            name=name,
            email=email,
        )
        await self.shells.users.run(
            Intent(subject(workspace_id, "user", user_id), upsert, workspace_id, user_id), ctx
        )
        password_hash = await asyncio.to_thread(HASHER.hash, password)
        join = domain.JoinStaff(
            workspace_id=workspace_id,
            now=now,
            user_id=user_id,
            email=email,
            role=role,
            password_hash=password_hash,
            invitation_id=invitation_id,
        )
        return await self.shells.staff.run(
            Intent(subject(workspace_id, "staff", user_id), join, workspace_id, user_id), ctx
        )

    async def _session(
        self, state: StaffState, ctx: CallContext, session_id: str | None = None
    ) -> DashboardSession:
        now = self.clock()
        ws = state.workspace_id
        owner = await self._fresh(self.shells.users, subject(ws, "user", state.user_id))
        session_id = session_id or new_id("ses")
        token = new_secret("sd")
        command = domain.IssueSession(
            workspace_id=ws,
            now=now,
            user_id=state.user_id,
            owner=owner,
            session_id=session_id,
            prefix=secret_prefix(token),
            token_hash=secret_hash(token),
            ttl_seconds=DASHBOARD_SESSION_TTL,
            dashboard=True,
        )
        where = subject(ws, "session", session_id)
        executed = await self.shells.sessions.run(Intent(where, command, ws, state.user_id), ctx)
        issued = executed.event
        if not isinstance(issued, SessionIssued):
            raise InternalError()
        await self.settle(executed.version)
        principal = StaffPrincipal(
            workspace_id=ws,
            session_id=session_id,
            user_id=state.user_id,
            role=state.role,
            expires_at=issued.expires_at,
        )
        return DashboardSession(token=token, principal=principal, member=await self._member(state))

    # -- invitations -----------------------------------------------------------------------

    async def invite(self, cmd: InviteStaff, ctx: CallContext) -> InvitationWithToken:
        ws = valid(cmd.workspace_id, "Workspace")
        by_role = await self._by_role(ws, cmd.by)
        now = self.clock()
        invitation_id = new_id("inv")
        token = new_secret("inv")
        email = cmd.input.email.strip().lower()
        command = domain.CreateInvitation(
            workspace_id=ws,
            now=now,
            invitation_id=invitation_id,
            email=email,
            role=cmd.input.role,
            prefix=secret_prefix(token),
            token_hash=secret_hash(token),
            ttl_seconds=INVITATION_TTL,
            by=cmd.by or "",
            by_role=by_role,
        )
        where = subject(ws, "invitation", invitation_id)
        executed = await self.shells.invitations.run(
            Intent(where, command, ws, cmd.by or "api"), ctx
        )
        state = executed.state
        assert state is not None
        await self.settle(executed.version)
        log.info("staff_invited", workspace_id=ws, invitation_id=invitation_id)
        return InvitationWithToken(
            invitation=Invitation(
                id=invitation_id,
                email=email,
                role=state.role,
                expires_at=state.expires_at,
                created_at=now,
                by=cmd.by or "",
            ),
            token=token,
        )

    async def revoke_invitation(self, cmd: RevokeInvitation, ctx: CallContext) -> Ok:
        ws = valid(cmd.workspace_id, "Invitation")
        invitation_id = valid(cmd.invitation_id, "Invitation")
        by_role = await self._by_role(ws, cmd.by)
        command = domain.RevokeInvitation(
            workspace_id=ws, now=self.clock(), by=cmd.by or "", by_role=by_role
        )
        where = subject(ws, "invitation", invitation_id)
        executed = await self.shells.invitations.run(
            Intent(where, command, ws, cmd.by or "api"), ctx
        )
        await self.settle(executed.version)
        return Ok(seq=executed.version)

    async def accept(self, cmd: AcceptInvitation, ctx: CallContext) -> DashboardSession:
        row = await self.store.invitation_by_prefix(cmd.prefix)
        if row is None or not same_secret(row.token_hash, cmd.token_hash):
            raise NotFound(domain.INVALID_INVITATION)
        ws = row.workspace_id
        where = subject(ws, "invitation", row.id)
        invitation = domain.usable_invitation(
            await self._fresh(self.shells.invitations, where), ws, self.clock()
        )
        user_id = domain.user_id_for(ws, domain.staff_external_id(invitation.email))
        spend = domain.AcceptInvitation(workspace_id=ws, now=self.clock(), user_id=user_id)
        await self.shells.invitations.run(Intent(where, spend, ws, user_id), ctx)
        joined = await self._join(
            ws,
            email=invitation.email,
            name=cmd.name,
            password=cmd.password,
            role=invitation.role,
            invitation_id=invitation.id,
            ctx=ctx,
        )
        assert joined.state is not None
        log.info("staff_joined", workspace_id=ws, user_id=user_id, invitation_id=row.id)
        return await self._session(joined.state, ctx)

    async def create_owner(self, cmd: CreateOwner, ctx: CallContext) -> StaffMember:
        ws = valid(cmd.workspace_id, "Workspace")
        workspace = await self._fresh(self.shells.workspaces, subject(ws, "workspace", ws))
        if workspace is None:
            raise NotFound("Workspace not found.")
        if await self.store.has_staff(ws):
            raise Conflict("This workspace has a team already: an owner invites the others.")
        joined = await self._join(
            ws,
            email=cmd.input.email,
            name=cmd.input.name,
            password=cmd.input.password,
            role="owner",
            invitation_id=None,
            ctx=ctx,
        )
        assert joined.state is not None
        await self.settle(joined.version)
        log.info("first_owner_created", workspace_id=ws, user_id=joined.state.user_id)
        return await self._member(joined.state)

    # -- signing in and out ----------------------------------------------------------------

    async def sign_in(self, cmd: StaffSignIn, ctx: CallContext) -> DashboardSession:
        data = cmd.input
        ws = data.workspace_id
        email = data.email.strip().lower()
        state: StaffState | None = None
        if is_valid_id(ws):
            user_id = domain.user_id_for(ws, domain.staff_external_id(email))
            state = await self._fresh(self.shells.staff, subject(ws, "staff", user_id))
        if state is None or state.removed or state.workspace_id != ws:
            await asyncio.to_thread(_verify, "", data.password)  # the same cost as a real try
            raise Unauthorized(domain.INVALID_SIGN_IN)
        now = self.clock()
        domain.refuse_locked(state, now)  # no password check at all while locked
        password_ok = await asyncio.to_thread(_verify, state.password_hash, data.password)
        session_id = new_id("ses")
        record = domain.RecordSignIn(
            workspace_id=ws, now=self.clock(), password_ok=password_ok, session_id=session_id
        )
        where = subject(ws, "staff", state.user_id)
        executed = await self.shells.staff.run(Intent(where, record, ws, state.user_id), ctx)
        after = executed.state
        assert after is not None
        if not password_ok:
            domain.refuse_locked(after, now)  # this failure locked it: say until when
            raise Unauthorized(domain.INVALID_SIGN_IN)
        return await self._session(after, ctx, session_id)

    async def sign_out_everywhere(self, cmd: SignOutEverywhere, ctx: CallContext) -> Ok:
        ws = valid(cmd.workspace_id, "Staff member")
        user_id = valid(cmd.user_id, "Staff member")
        last = await self._end_sessions(ws, user_id, ctx)
        if last:
            await self.enforce(last)
        log.info("staff_signed_out_everywhere", workspace_id=ws, user_id=user_id)
        return Ok(seq=last)

    async def _end_sessions(self, ws: str, user_id: str, ctx: CallContext) -> int:
        """Revoke every live dashboard session of the member; the last stream sequence."""
        last = 0
        for session_id in await self.store.live_dashboard_sessions(ws, user_id):
            command = domain.RevokeSession(workspace_id=ws, now=self.clock())
            where = subject(ws, "session", session_id)
            try:
                executed = await self.shells.sessions.run(Intent(where, command, ws, user_id), ctx)
            except NotFound:
                continue  # revoked meanwhile
            last = max(last, executed.version)
        return last

    # -- roles and removal -----------------------------------------------------------------

    async def change_role(self, cmd: ChangeStaffRole, ctx: CallContext) -> StaffMember:
        ws = valid(cmd.workspace_id, "Staff member")
        user_id = valid(cmd.user_id, "Staff member")
        by_role = await self._by_role(ws, cmd.by)
        command = domain.ChangeRole(
            workspace_id=ws,
            now=self.clock(),
            role=cmd.role,
            by=cmd.by or "",
            by_role=by_role,
            owners=await self.store.owners(ws),
        )
        where = subject(ws, "staff", user_id)
        executed = await self.shells.staff.run(Intent(where, command, ws, cmd.by or "api"), ctx)
        if executed.events:
            await self.enforce(executed.version)
        assert executed.state is not None
        log.info("staff_role_changed", workspace_id=ws, user_id=user_id, role=cmd.role)
        return await self._member(executed.state)

    async def remove(self, cmd: RemoveStaff, ctx: CallContext) -> Ok:
        ws = valid(cmd.workspace_id, "Staff member")
        user_id = valid(cmd.user_id, "Staff member")
        by_role = await self._by_role(ws, cmd.by)
        command = domain.RemoveStaff(
            workspace_id=ws,
            now=self.clock(),
            by=cmd.by or "",
            by_role=by_role,
            owners=await self.store.owners(ws),
        )
        where = subject(ws, "staff", user_id)
        executed = await self.shells.staff.run(Intent(where, command, ws, cmd.by or "api"), ctx)
        last = max(executed.version, await self._end_sessions(ws, user_id, ctx))
        await self.enforce(last)
        log.info("staff_removed", workspace_id=ws, user_id=user_id)
        return Ok(seq=last)
