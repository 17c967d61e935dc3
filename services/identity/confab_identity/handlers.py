"""The identity service's RPC handlers: one method per request of ``contracts.identity``.

Commands load the aggregate of one ``IDENTITY`` subject, decide (``domain``),
append with optimistic concurrency (``Aggregates.execute``), then wait until
the read model shows the write, so the caller's next request sees it. Queries
read only the read model (``Store``).

Nothing secret reaches a log line: handlers log ids only, and an unexpected
failure is logged as its type and code locations, never its message or the
frames' local variables (which hold tokens, keys and hashes).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from confab.aggregate import Aggregates, Decision
from confab.authority import fence
from confab.contracts.base import Ok, Request
from confab.contracts.identity import (
    ApiKey,
    ApiKeyPrincipal,
    AppCredentials,
    AuthenticateApiKey,
    AuthenticateSession,
    CreateWorkspace,
    EraseUser,
    GetAppCredentials,
    GetUser,
    GetWorkspace,
    IssueApiKey,
    IssueSession,
    ListWorkspaces,
    RevokeApiKey,
    RevokeSession,
    Session,
    SessionIssued,
    SessionPrincipal,
    SetUserBan,
    UpdateUser,
    UpsertUser,
    User,
    UserSaved,
    UserUpserted,
    Workspace,
    WorkspaceList,
    WorkspaceWithSecrets,
    subject,
)
from confab.errors import (
    InternalError,
    InvalidRequest,
    NotFound,
    Unauthorized,
    Unavailable,
)
from confab.eventlog import last_version
from confab.ids import (
    is_valid_id,
    new_id,
    new_secret,
    numeric_app_id,
    same_secret,
    secret_hash,
    secret_prefix,
)
from confab.logging import get_logger
from confab.projection import ProjectionRunner
from confab.rpc import CallContext
from confab_identity import domain
from confab_identity.domain import State, UserState
from confab_identity.store import Store

log = get_logger("confab_identity")

LIST_LIMIT_MAX = 100


def utcnow() -> datetime:
    return datetime.now(UTC)


def _valid(value: str, what: str) -> str:
    """An id from a request, checked before it goes into a subject; NotFound if malformed."""
    if not is_valid_id(value):
        raise NotFound(f"{what} not found.")
    return value


Handler = Callable[[Any, CallContext], Awaitable[Any]]


def _user(decision: Decision[State]) -> UserState:
    state = decision.state
    if not isinstance(state, UserState):  # the deciders never let this happen
        raise NotFound("User not found.")
    return state


class Handlers:
    def __init__(
        self,
        aggregates: Aggregates[State],
        store: Store,
        runner: ProjectionRunner,
        *,
        read_wait: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.aggregates = aggregates
        self.store = store
        self.runner = runner
        self.read_wait = read_wait
        self.clock = clock

    def routes(self) -> list[tuple[type[Request], Handler]]:
        return [(request_type, handler) for request_type, handler in self._routes()]

    def _routes(self) -> list[tuple[type[Request], Handler]]:
        return [
            (CreateWorkspace, self.create_workspace),
            (ListWorkspaces, self.list_workspaces),
            (GetWorkspace, self.get_workspace),
            (IssueApiKey, self.issue_api_key),
            (RevokeApiKey, self.revoke_api_key),
            (AuthenticateApiKey, self.authenticate_api_key),
            (AuthenticateSession, self.authenticate_session),
            (UpsertUser, self.upsert_user),
            (UpdateUser, self.update_user),
            (GetUser, self.get_user),
            (EraseUser, self.erase_user),
            (SetUserBan, self.set_user_ban),
            (IssueSession, self.issue_session),
            (RevokeSession, self.revoke_session),
            (GetAppCredentials, self.get_app_credentials),
        ]

    # -- plumbing --------------------------------------------------------------------------

    async def _execute(
        self,
        subject_: str,
        decide: Callable[[State], Any],
        *,
        workspace_id: str,
        actor: str,
        ctx: CallContext,
    ) -> Decision[State]:
        return await self.aggregates.execute(
            subject_,
            decide,
            msg_id=new_id("evt"),
            workspace=workspace_id,
            actor=actor,
            correlation=ctx.correlation,
        )

    async def _current(self, subject_: str, *, fresh: bool = False) -> State:
        """The state of ``subject_``; a cached absence is checked against the log."""
        state, _ = await self.aggregates.load(subject_, fresh=fresh)
        if state is None and not fresh:
            state, _ = await self.aggregates.load(subject_, fresh=True)
        return state

    async def _settle(self, seq: int) -> None:
        """Read-your-writes: wait until the read model has applied ``seq``."""
        if not await self.runner.wait_for(seq, self.read_wait):
            # The write is durable; the caller can still pass min_seq to later queries.
            log.warning("read_model_behind", seq=seq, checkpoint=self.runner.checkpoint)

    async def _enforced(self, decision: Decision[State]) -> None:
        """An authority change (ban, unban, erasure, revocation) is in force everywhere
        before its reply leaves: every gateway, messaging copy and fanout node has applied
        it (``confab.authority.fence``), and so has this read model."""
        await self._settle(decision.version)
        if decision.event is not None:
            await fence(self.aggregates.js, decision.version, timeout=self.read_wait)

    async def _issue_key(
        self, workspace_id: str, workspace: State, now: datetime, actor: str, ctx: CallContext
    ) -> tuple[str, str, Decision[State]]:
        key_id = new_id("key")
        plaintext = new_secret("sk")
        prefix, digest = secret_prefix(plaintext), secret_hash(plaintext)
        decision = await self._execute(
            subject(workspace_id, "api_key", key_id),
            lambda state: domain.decide_issue_api_key(
                workspace,
                state,
                now,
                workspace_id=workspace_id,
                key_id=key_id,
                prefix=prefix,
                key_hash=digest,
            ),
            workspace_id=workspace_id,
            actor=actor,
            ctx=ctx,
        )
        return key_id, plaintext, decision

    # -- workspaces and API keys -----------------------------------------------------------

    async def create_workspace(
        self, cmd: CreateWorkspace, ctx: CallContext
    ) -> WorkspaceWithSecrets:
        now = self.clock()
        workspace_id = new_id("ws")
        app_key = new_id("app")
        app_secret = secrets.token_urlsafe(32)
        created = await self._execute(
            subject(workspace_id, "workspace", workspace_id),
            lambda state: domain.decide_create_workspace(
                cmd,
                state,
                now,
                workspace_id=workspace_id,
                app_key=app_key,
                app_secret=app_secret,
            ),
            workspace_id=workspace_id,
            actor=cmd.actor,
            ctx=ctx,
        )
        key_id, api_key, issued = await self._issue_key(
            workspace_id, created.state, now, cmd.actor, ctx
        )
        await self._settle(issued.version)
        log.info("workspace_created", workspace_id=workspace_id, key_id=key_id)
        return WorkspaceWithSecrets(
            id=workspace_id,
            name=cmd.input.name,
            api_key=api_key,
            app_key=app_key,
            app_secret=app_secret,
            pusher_app_id=numeric_app_id(workspace_id),
            created_at=now,
        )

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
        workspace_id = _valid(query.workspace_id, "Workspace")
        found = await self.store.workspace(workspace_id)
        if found is None and await self._caught_up(
            subject(workspace_id, "workspace", workspace_id)
        ):
            found = await self.store.workspace(workspace_id)
        if found is None:
            raise NotFound("Workspace not found.")
        return found

    async def _caught_up(self, subject_: str) -> bool:
        """Before answering "not found": wait (bounded) until the read model has applied the
        last event of ``subject_``, if the log has one. False when the log has nothing."""
        version = await last_version(self.aggregates.js, self.aggregates.stream, subject_)
        if version == 0:
            return False
        await self.runner.wait_for(version, self.read_wait)
        return True

    async def issue_api_key(self, cmd: IssueApiKey, ctx: CallContext) -> ApiKey:
        now = self.clock()
        workspace_id = _valid(cmd.workspace_id, "Workspace")
        workspace = await self._current(subject(workspace_id, "workspace", workspace_id))
        key_id, api_key, issued = await self._issue_key(
            workspace_id, workspace, now, cmd.actor, ctx
        )
        await self._settle(issued.version)
        log.info("api_key_issued", workspace_id=workspace_id, key_id=key_id)
        return ApiKey(id=key_id, workspace_id=workspace_id, api_key=api_key, created_at=now)

    async def revoke_api_key(self, cmd: RevokeApiKey, ctx: CallContext) -> Ok:
        now = self.clock()
        workspace_id = _valid(cmd.workspace_id, "API key")
        key_id = _valid(cmd.key_id, "API key")
        decision = await self._execute(
            subject(workspace_id, "api_key", key_id),
            lambda state: domain.decide_revoke_api_key(workspace_id, key_id, state, now),
            workspace_id=workspace_id,
            actor=cmd.actor,
            ctx=ctx,
        )
        await self._enforced(decision)
        if decision.event is not None:
            log.info("api_key_revoked", workspace_id=workspace_id, key_id=key_id)
        return Ok(seq=decision.version)

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

    # -- users -----------------------------------------------------------------------------

    async def upsert_user(self, cmd: UpsertUser, ctx: CallContext) -> UserSaved:
        now = self.clock()
        workspace_id = _valid(cmd.workspace_id, "Workspace")
        user_id = domain.user_id_for(workspace_id, cmd.input.external_id)
        decision = await self._execute(
            subject(workspace_id, "user", user_id),
            lambda state: domain.decide_upsert_user(cmd, state, now, user_id=user_id),
            workspace_id=workspace_id,
            actor=cmd.actor,
            ctx=ctx,
        )
        created = isinstance(decision.event, UserUpserted) and decision.event.created
        await self._settle(decision.version)
        return UserSaved(
            user=domain.user_view(_user(decision)), created=created, seq=decision.version
        )

    async def _change_user(
        self,
        workspace_id: str,
        user_id: str,
        decide: Callable[[State], Any],
        actor: str,
        ctx: CallContext,
    ) -> Decision[State]:
        workspace_id = _valid(workspace_id, "User")
        user_id = _valid(user_id, "User")
        decision = await self._execute(
            subject(workspace_id, "user", user_id),
            decide,
            workspace_id=workspace_id,
            actor=actor,
            ctx=ctx,
        )
        await self._settle(decision.version)
        return decision

    async def update_user(self, cmd: UpdateUser, ctx: CallContext) -> UserSaved:
        now = self.clock()
        decision = await self._change_user(
            cmd.workspace_id,
            cmd.user_id,
            lambda state: domain.decide_update_user(cmd, state, now),
            cmd.actor,
            ctx,
        )
        return UserSaved(
            user=domain.user_view(_user(decision)), created=False, seq=decision.version
        )

    async def set_user_ban(self, cmd: SetUserBan, ctx: CallContext) -> UserSaved:
        now = self.clock()
        decision = await self._change_user(
            cmd.workspace_id,
            cmd.user_id,
            lambda state: domain.decide_set_user_ban(cmd, state, now),
            cmd.actor,
            ctx,
        )
        await self._enforced(decision)
        return UserSaved(
            user=domain.user_view(_user(decision)), created=False, seq=decision.version
        )

    async def erase_user(self, cmd: EraseUser, ctx: CallContext) -> Ok:
        """Purge the user's data key, then record the erasure.

        The key goes first: whatever happens next, the personal data sealed in
        the log can no longer be read, and a retry finishes the job.
        """
        now = self.clock()
        workspace_id = _valid(cmd.workspace_id, "User")
        user_id = _valid(cmd.user_id, "User")
        state, _ = await self.aggregates.load(subject(workspace_id, "user", user_id), fresh=True)
        domain.live_user(state, workspace_id)
        if self.aggregates.keys is not None:
            await self.aggregates.keys.erase(workspace_id, user_id)
        decision = await self._change_user(
            cmd.workspace_id,
            cmd.user_id,
            lambda state: domain.decide_erase_user(cmd.workspace_id, state, now),
            cmd.actor,
            ctx,
        )
        await self._enforced(decision)
        log.info("user_erased", workspace_id=cmd.workspace_id, user_id=cmd.user_id)
        return Ok(seq=decision.version)

    async def get_user(self, query: GetUser, _ctx: CallContext) -> User:
        if query.min_seq > 0 and not await self.runner.wait_for(query.min_seq, self.read_wait):
            raise Unavailable("The read model is catching up; try again shortly.")
        if not (is_valid_id(query.workspace_id) and is_valid_id(query.user_id)):
            raise NotFound("User not found.")
        user = await self.store.user(query.workspace_id, query.user_id)
        if user is None:
            raise NotFound("User not found.")
        return user

    # -- sessions --------------------------------------------------------------------------

    async def issue_session(self, cmd: IssueSession, ctx: CallContext) -> Session:
        now = self.clock()
        workspace_id = _valid(cmd.workspace_id, "User")
        user_id = _valid(cmd.input.user_id, "User")
        # Fresh from the log: the user may have been erased by another process.
        user = await self._current(subject(workspace_id, "user", user_id), fresh=True)
        session_id = new_id("ses")
        token = new_secret("st")
        prefix, digest = secret_prefix(token), secret_hash(token)
        decision = await self._execute(
            subject(workspace_id, "session", session_id),
            lambda state: domain.decide_issue_session(
                cmd, user, state, now, session_id=session_id, prefix=prefix, token_hash=digest
            ),
            workspace_id=workspace_id,
            actor=cmd.actor,
            ctx=ctx,
        )
        issued = decision.event
        if not (isinstance(issued, SessionIssued) and isinstance(user, UserState)):
            raise InternalError()  # the decider returns a SessionIssued or raises
        await self._settle(decision.version)
        return Session(token=token, expires_at=issued.expires_at, user=domain.user_view(user))

    async def revoke_session(self, cmd: RevokeSession, ctx: CallContext) -> Ok:
        now = self.clock()
        workspace_id = _valid(cmd.workspace_id, "Session")
        row = await self.store.session_by_prefix(cmd.prefix)
        if (
            row is None
            or not same_secret(row.token_hash, cmd.token_hash)
            or row.workspace_id != workspace_id
        ):
            raise NotFound("Session not found.")
        decision = await self._execute(
            subject(workspace_id, "session", row.id),
            lambda state: domain.decide_revoke_session(workspace_id, state, now),
            workspace_id=workspace_id,
            actor=cmd.actor,
            ctx=ctx,
        )
        await self._enforced(decision)
        return Ok(seq=decision.version)

    async def authenticate_session(
        self, query: AuthenticateSession, _ctx: CallContext
    ) -> SessionPrincipal:
        row = await self.store.session_by_prefix(query.prefix)
        if row is None:
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
