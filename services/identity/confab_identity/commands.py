"""The write side of identity: one handler per command of ``contracts.identity``.

Each handler is the shell's three steps (``confab.shell``) on the decider of
its aggregate kind (``domain``): *prepare* checks the ids that go into the
subject, makes up new ids and secrets, and loads what the decision needs from
another aggregate (the workspace of a new API key, the user of a new session,
fresh from the log; the session a token names, from the read model); the
shell runs the command against the log with optimistic concurrency; the reply
waits until the read model shows the write (read-your-writes), and for an
authority change (ban, unban, erasure, revocation) until it is in force
everywhere (``confab.authority.fence``).

Nothing secret reaches a log line: handlers log ids only.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nats.js import JetStreamContext

from confab.aggregate import Executed
from confab.authority import fence
from confab.contracts.base import Ok
from confab.contracts.events.identity import SessionIssued, UserUpserted, subject
from confab.contracts.identity import (
    ApiKey,
    CreateWorkspace,
    EraseUser,
    IssueApiKey,
    IssueSession,
    RevokeApiKey,
    RevokeSession,
    Session,
    SetUserBan,
    UpdateUser,
    UpsertUser,
    UserSaved,
    WorkspaceWithSecrets,
)
from confab.errors import InternalError, NotFound
from confab.ids import (
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
from confab.shell import CommandShell, Intent, Route
from confab_identity import domain
from confab_identity.domain import ApiKeyState, SessionState, UserState, WorkspaceState
from confab_identity.handlers import utcnow, valid
from confab_identity.store import Store

log = get_logger("confab_identity")


@dataclass(frozen=True, slots=True)
class Shells:
    """The command shell of each aggregate kind, all on ``IDENTITY``."""

    workspaces: CommandShell[domain.Command, WorkspaceState | None]
    api_keys: CommandShell[domain.Command, ApiKeyState | None]
    users: CommandShell[domain.Command, UserState | None]
    sessions: CommandShell[domain.Command, SessionState | None]


class Commands:
    def __init__(
        self,
        shells: Shells,
        js: JetStreamContext,
        store: Store,
        runner: ProjectionRunner,
        *,
        read_wait: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.shells = shells
        self.js = js
        self.store = store  # only to find the session a token names
        self.runner = runner
        self.read_wait = read_wait
        self.clock = clock

    def routes(self) -> list[Route]:
        users, sessions = self.shells.users, self.shells.sessions
        return [
            (CreateWorkspace, self.create_workspace),
            (IssueApiKey, self.issue_api_key),
            (RevokeApiKey, self.shells.api_keys.handler(self.revoke_api_key, self.key_revoked)),
            (UpsertUser, users.handler(self.upsert_user, self.user_saved)),
            (UpdateUser, users.handler(self.update_user, self.user_saved)),
            (SetUserBan, users.handler(self.set_user_ban, self.user_enforced)),
            (EraseUser, users.handler(self.erase_user, self.user_erased)),
            (IssueSession, self.issue_session),
            (RevokeSession, sessions.handler(self.revoke_session, self.enforced)),
        ]

    # -- replies ---------------------------------------------------------------------------

    async def settle(self, seq: int) -> None:
        """Read-your-writes: wait until the read model has applied ``seq``."""
        if not await self.runner.wait_for(seq, self.read_wait):
            # The write is durable; the caller can still pass min_seq to later queries.
            log.warning("read_model_behind", seq=seq, checkpoint=self.runner.checkpoint)

    async def enforced(self, _request: Any, executed: Executed[Any]) -> Ok:
        """An authority change (ban, unban, erasure, revocation) is in force everywhere
        before its reply leaves: every gateway, messaging copy and fanout node has applied
        it (``confab.authority.fence``), and so has this read model."""
        await self.settle(executed.version)
        if executed.events:
            await fence(self.js, executed.version, timeout=self.read_wait)
        return Ok(seq=executed.version)

    async def user_saved(self, _request: Any, executed: Executed[UserState | None]) -> UserSaved:
        await self.settle(executed.version)
        event = executed.event
        return UserSaved(
            user=domain.user_view(_user(executed)),
            created=isinstance(event, UserUpserted) and event.created,
            seq=executed.version,
        )

    async def user_enforced(self, request: Any, executed: Executed[UserState | None]) -> UserSaved:
        await self.enforced(request, executed)
        return UserSaved(
            user=domain.user_view(_user(executed)), created=False, seq=executed.version
        )

    # -- workspaces and API keys -----------------------------------------------------------

    async def create_workspace(
        self, cmd: CreateWorkspace, ctx: CallContext
    ) -> WorkspaceWithSecrets:
        now = self.clock()
        workspace_id = new_id("ws")
        command = domain.CreateWorkspace(
            workspace_id=workspace_id,
            now=now,
            name=cmd.input.name,
            app_key=new_id("app"),
            app_secret=secrets.token_urlsafe(32),
        )
        where = subject(workspace_id, "workspace", workspace_id)
        created = await self.shells.workspaces.run(
            Intent(where, command, workspace_id, cmd.actor), ctx
        )
        key_id, api_key, issued = await self._issue_key(
            workspace_id, created.state, now, cmd.actor, ctx
        )
        await self.settle(issued.version)
        log.info("workspace_created", workspace_id=workspace_id, key_id=key_id)
        return WorkspaceWithSecrets(
            id=workspace_id,
            name=command.name,
            api_key=api_key,
            app_key=command.app_key,
            app_secret=command.app_secret,
            pusher_app_id=numeric_app_id(workspace_id),
            created_at=now,
        )

    async def issue_api_key(self, cmd: IssueApiKey, ctx: CallContext) -> ApiKey:
        now = self.clock()
        workspace_id = valid(cmd.workspace_id, "Workspace")
        workspace = await self._current(
            self.shells.workspaces, subject(workspace_id, "workspace", workspace_id)
        )
        key_id, api_key, issued = await self._issue_key(
            workspace_id, workspace, now, cmd.actor, ctx
        )
        await self.settle(issued.version)
        log.info("api_key_issued", workspace_id=workspace_id, key_id=key_id)
        return ApiKey(id=key_id, workspace_id=workspace_id, api_key=api_key, created_at=now)

    async def _issue_key(
        self,
        workspace_id: str,
        workspace: WorkspaceState | None,
        now: datetime,
        actor: str,
        ctx: CallContext,
    ) -> tuple[str, str, Executed[ApiKeyState | None]]:
        key_id = new_id("key")
        plaintext = new_secret("sk")
        command = domain.IssueApiKey(
            workspace_id=workspace_id,
            now=now,
            workspace=workspace,
            key_id=key_id,
            prefix=secret_prefix(plaintext),
            key_hash=secret_hash(plaintext),
        )
        where = subject(workspace_id, "api_key", key_id)
        issued = await self.shells.api_keys.run(Intent(where, command, workspace_id, actor), ctx)
        return key_id, plaintext, issued

    async def _current(self, shell: CommandShell[Any, Any], subject_: str) -> Any:
        """The state of ``subject_``; a cached absence is checked against the log."""
        aggregates = shell.aggregates
        state, _ = await aggregates.load(subject_)
        if state is None:
            state, _ = await aggregates.load(subject_, fresh=True)
        return state

    async def revoke_api_key(self, cmd: RevokeApiKey, _ctx: CallContext) -> Intent[Any]:
        workspace_id = valid(cmd.workspace_id, "API key")
        key_id = valid(cmd.key_id, "API key")
        command = domain.RevokeApiKey(workspace_id=workspace_id, now=self.clock(), key_id=key_id)
        return Intent(subject(workspace_id, "api_key", key_id), command, workspace_id, cmd.actor)

    async def key_revoked(self, cmd: RevokeApiKey, executed: Executed[Any]) -> Ok:
        reply = await self.enforced(cmd, executed)
        if executed.events:
            log.info("api_key_revoked", workspace_id=cmd.workspace_id, key_id=cmd.key_id)
        return reply

    # -- users -----------------------------------------------------------------------------

    def _user_intent(
        self, workspace_id: str, user_id: str, command: domain.Command, actor: str
    ) -> Intent[Any]:
        workspace_id = valid(workspace_id, "User")
        user_id = valid(user_id, "User")
        return Intent(subject(workspace_id, "user", user_id), command, workspace_id, actor)

    async def upsert_user(self, cmd: UpsertUser, _ctx: CallContext) -> Intent[Any]:
        workspace_id = valid(cmd.workspace_id, "Workspace")
        data = cmd.input
        user_id = domain.user_id_for(workspace_id, data.external_id)
        command = domain.UpsertUser(
            workspace_id=workspace_id,
            now=self.clock(),
            user_id=user_id,
            external_id=data.external_id,
            name=data.name,
            email=data.email,
            avatar_url=data.avatar_url,
            metadata=data.metadata,
        )
        return Intent(subject(workspace_id, "user", user_id), command, workspace_id, cmd.actor)

    async def update_user(self, cmd: UpdateUser, _ctx: CallContext) -> Intent[Any]:
        patch = cmd.patch
        command = domain.UpdateUser(
            workspace_id=cmd.workspace_id,
            now=self.clock(),
            name=patch.name,
            email=patch.email,
            avatar_url=patch.avatar_url,
            metadata=patch.metadata,
        )
        return self._user_intent(cmd.workspace_id, cmd.user_id, command, cmd.actor)

    async def set_user_ban(self, cmd: SetUserBan, _ctx: CallContext) -> Intent[Any]:
        now = self.clock()
        seconds = cmd.duration_seconds
        command = domain.SetUserBan(
            workspace_id=cmd.workspace_id,
            now=now,
            banned=cmd.banned,
            until=now + timedelta(seconds=seconds) if cmd.banned and seconds else None,
            if_until=cmd.if_until,
        )
        return self._user_intent(cmd.workspace_id, cmd.user_id, command, cmd.actor)

    async def erase_user(self, cmd: EraseUser, _ctx: CallContext) -> Intent[Any]:
        """Purge the user's data key, then (the shell) record the erasure.

        The key goes first: whatever happens next, the personal data sealed in
        the log can no longer be read, and a retry finishes the job.
        """
        now = self.clock()
        target = self._user_intent(
            cmd.workspace_id,
            cmd.user_id,
            domain.EraseUser(workspace_id=cmd.workspace_id, now=now),
            cmd.actor,
        )
        aggregates = self.shells.users.aggregates
        state, _ = await aggregates.load(target.subject, fresh=True)
        domain.live_user(state, cmd.workspace_id)
        if aggregates.keys is not None:
            await aggregates.keys.erase(cmd.workspace_id, cmd.user_id)
        return target

    async def user_erased(self, cmd: EraseUser, executed: Executed[Any]) -> Ok:
        reply = await self.enforced(cmd, executed)
        log.info("user_erased", workspace_id=cmd.workspace_id, user_id=cmd.user_id)
        return reply

    # -- sessions --------------------------------------------------------------------------

    async def issue_session(self, cmd: IssueSession, ctx: CallContext) -> Session:
        now = self.clock()
        workspace_id = valid(cmd.workspace_id, "User")
        user_id = valid(cmd.input.user_id, "User")
        # Fresh from the log: the user may have been erased by another process.
        owner, _ = await self.shells.users.aggregates.load(
            subject(workspace_id, "user", user_id), fresh=True
        )
        session_id = new_id("ses")
        token = new_secret("st")
        command = domain.IssueSession(
            workspace_id=workspace_id,
            now=now,
            user_id=user_id,
            owner=owner,
            session_id=session_id,
            prefix=secret_prefix(token),
            token_hash=secret_hash(token),
            ttl_seconds=cmd.input.ttl_seconds,
        )
        where = subject(workspace_id, "session", session_id)
        executed = await self.shells.sessions.run(
            Intent(where, command, workspace_id, cmd.actor), ctx
        )
        issued = executed.event
        if not (isinstance(issued, SessionIssued) and owner is not None):
            raise InternalError()  # the decider decides a SessionIssued or raises
        await self.settle(executed.version)
        return Session(token=token, expires_at=issued.expires_at, user=domain.user_view(owner))

    async def revoke_session(self, cmd: RevokeSession, _ctx: CallContext) -> Intent[Any]:
        workspace_id = valid(cmd.workspace_id, "Session")
        row = await self.store.session_by_prefix(cmd.prefix)
        if (
            row is None
            or not same_secret(row.token_hash, cmd.token_hash)
            or row.workspace_id != workspace_id
        ):
            raise NotFound("Session not found.")
        command = domain.RevokeSession(workspace_id=workspace_id, now=self.clock())
        return Intent(subject(workspace_id, "session", row.id), command, workspace_id, cmd.actor)


def _user(executed: Executed[UserState | None]) -> UserState:
    if executed.state is None:  # the deciders never let this happen
        raise NotFound("User not found.")
    return executed.state
