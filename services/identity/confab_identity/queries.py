"""The read side of identity: one handler per query of ``contracts.identity``.

Queries read only the read model (``Store``): workspaces, API keys and
sessions to authenticate, users, the app credentials the fanout signs with.
Before answering "not found" for something a client may have just created,
a query waits (bounded) until the read model has applied the last event the
log holds for it. Authentication answers one message for every failure.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from confab.contracts.events.identity import subject
from confab.contracts.identity import (
    ApiKeyList,
    ApiKeyPrincipal,
    AppCredentials,
    AuthenticateApiKey,
    AuthenticateSession,
    AuthenticateStaffSession,
    GetAppCredentials,
    GetUser,
    GetWorkspace,
    InvitationList,
    ListApiKeys,
    ListInvitations,
    ListStaff,
    ListWorkspaces,
    SessionPrincipal,
    StaffList,
    StaffPrincipal,
    User,
    Workspace,
    WorkspaceList,
)
from confab.errors import InvalidRequest, NotFound, Unauthorized, Unavailable
from confab.eventlog import EventLog
from confab.ids import is_valid_id
from confab.projection import ProjectionRunner
from confab.rpc import CallContext
from confab.shell import Route
from confab_identity import domain
from confab_identity.handlers import utcnow, valid
from confab_identity.store import Store

LIST_LIMIT_MAX = 100


class Queries:
    def __init__(
        self,
        store: Store,
        runner: ProjectionRunner,
        log: EventLog,
        *,
        read_wait: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.runner = runner
        self.log = log  # IDENTITY: what the read model may not have applied yet
        self.read_wait = read_wait
        self.clock = clock

    def routes(self) -> list[Route]:
        return [
            (ListWorkspaces, self.list_workspaces),
            (GetWorkspace, self.get_workspace),
            (AuthenticateApiKey, self.authenticate_api_key),
            (AuthenticateSession, self.authenticate_session),
            (GetUser, self.get_user),
            (GetAppCredentials, self.get_app_credentials),
            (AuthenticateStaffSession, self.authenticate_staff_session),
            (ListStaff, self.list_staff),
            (ListInvitations, self.list_invitations),
            (ListApiKeys, self.list_api_keys),
        ]

    async def _caught_up(self, subject_: str) -> bool:
        """Before answering "not found": wait (bounded) until the read model has applied the
        last event of ``subject_``, if the log has one. False when the log has nothing."""
        version = await self.log.last_version(subject_)
        if version == 0:
            return False
        await self.runner.wait_for(version, self.read_wait)
        return True

    # -- workspaces and API keys -----------------------------------------------------------

    async def list_workspaces(self, query: ListWorkspaces, _ctx: CallContext) -> WorkspaceList:
        if not 1 <= query.limit <= LIST_LIMIT_MAX:
            raise InvalidRequest(
                "The limit is out of range.", {"limit": f"must be between 1 and {LIST_LIMIT_MAX}"}
            )
        items, has_more = await self.store.workspaces(after=query.after, limit=query.limit)
        return WorkspaceList(
            data=items, has_more=has_more, next_cursor=items[-1].id if has_more else None
        )

    async def get_workspace(self, query: GetWorkspace, _ctx: CallContext) -> Workspace:
        workspace_id = valid(query.workspace_id, "Workspace")
        found = await self.store.workspace(workspace_id)
        if found is None and await self._caught_up(
            subject(workspace_id, "workspace", workspace_id)
        ):
            found = await self.store.workspace(workspace_id)
        if found is None:
            raise NotFound("Workspace not found.")
        return found

    async def authenticate_api_key(
        self, query: AuthenticateApiKey, _ctx: CallContext
    ) -> ApiKeyPrincipal:
        row = await self.store.api_key_by_prefix(query.prefix)
        if row is None:
            raise Unauthorized(domain.INVALID_API_KEY)
        domain.check_api_key(row.key_hash, query.key_hash, row.revoked)
        return ApiKeyPrincipal(workspace_id=row.workspace_id, key_id=row.id)

    async def get_app_credentials(
        self, query: GetAppCredentials, _ctx: CallContext
    ) -> AppCredentials:
        if (query.app_key is None) == (query.workspace_id is None):
            raise InvalidRequest("Give either app_key or workspace_id.")
        found = await self.store.app_credentials(query.app_key, workspace_id=query.workspace_id)
        if found is None:
            raise NotFound("App not found.")
        return found

    # -- users and sessions ----------------------------------------------------------------

    async def get_user(self, query: GetUser, _ctx: CallContext) -> User:
        if query.min_seq > 0 and not await self.runner.wait_for(query.min_seq, self.read_wait):
            raise Unavailable("The read model is catching up; try again shortly.")
        if not (is_valid_id(query.workspace_id) and is_valid_id(query.user_id)):
            raise NotFound("User not found.")
        user = await self.store.user(query.workspace_id, query.user_id)
        if user is None:
            raise NotFound("User not found.")
        return user

    async def authenticate_session(
        self, query: AuthenticateSession, _ctx: CallContext
    ) -> SessionPrincipal:
        row = await self.store.session_by_prefix(query.prefix)
        if row is None or row.dashboard:  # a dashboard cookie is no widget token
            raise Unauthorized(domain.INVALID_SESSION)
        domain.check_session(
            row.token_hash,
            query.token_hash,
            expires_at=row.expires_at,
            revoked=row.revoked,
            user_erased=row.user_erased,
            now=self.clock(),
        )
        return SessionPrincipal(
            workspace_id=row.workspace_id,
            session_id=row.id,
            user_id=row.user_id,
            expires_at=row.expires_at,
        )

    # -- staff -----------------------------------------------------------------------------

    async def authenticate_staff_session(
        self, query: AuthenticateStaffSession, _ctx: CallContext
    ) -> StaffPrincipal:
        """A dashboard session whose member is still on the team, with their role now."""
        row = await self.store.session_by_prefix(query.prefix)
        if row is None or not row.dashboard:
            raise Unauthorized(domain.INVALID_SESSION)
        domain.check_session(
            row.token_hash,
            query.token_hash,
            expires_at=row.expires_at,
            revoked=row.revoked or row.role is None,
            user_erased=row.user_erased,
            now=self.clock(),
        )
        assert row.role is not None
        return StaffPrincipal(
            workspace_id=row.workspace_id,
            session_id=row.id,
            user_id=row.user_id,
            role=row.role,
            expires_at=row.expires_at,
        )

    async def list_staff(self, query: ListStaff, _ctx: CallContext) -> StaffList:
        return StaffList(data=await self.store.staff(valid(query.workspace_id, "Workspace")))

    async def list_invitations(self, query: ListInvitations, _ctx: CallContext) -> InvitationList:
        workspace_id = valid(query.workspace_id, "Workspace")
        return InvitationList(data=await self.store.invitations(workspace_id, self.clock()))

    async def list_api_keys(self, query: ListApiKeys, _ctx: CallContext) -> ApiKeyList:
        return ApiKeyList(data=await self.store.api_keys(valid(query.workspace_id, "Workspace")))
