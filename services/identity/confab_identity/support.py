"""A workspace's support settings and its agents' availability (issue 19).

One aggregate per workspace on ``identity.evt.<ws>.support.<ws>``: the
settings (``workspace.support_configured``, whole after each change) and each
agent's availability (``agent.availability_set``, online or away). Its own
decider, projection (tables ``support_settings`` and ``agent_availability`` in
schema ``identity``) and handlers, wired beside the others by ``app``.

The widget reads the public part by the workspace's public app key
(``GetSupportSetup(app_key=…)``); the gateway checks a visitor's ``Origin``
against ``allowed_origins`` and decides on anonymous visitors from it, and
round-robin picks among the agents online.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from confab.aggregate import Executed
from confab.bus import IDENTITY
from confab.contracts.events import Event
from confab.contracts.events.identity import (
    AgentAvailabilitySet,
    AgentStatus,
    SupportConfigured,
    SupportSettings,
    subject,
)
from confab.contracts.support import (
    Agent,
    ConfigureSupport,
    GetSupportSetup,
    SetAvailability,
    SupportSetup,
)
from confab.decider import NOTHING, Decider, Decision, emit
from confab.errors import InvalidRequest, NotFound
from confab.events import Envelope
from confab.projection import Projection, ProjectionRunner
from confab.rpc import CallContext
from confab.shell import CommandShell, Intent, Route
from confab_identity.handlers import utcnow, valid
from confab_identity.store import SCHEMA, Store

KIND = "support"
SUBJECTS = ("identity.evt.*.support.*",)


def support_subject(workspace_id: str) -> str:
    return subject(workspace_id, KIND, workspace_id)


# -- the decider ---------------------------------------------------------------------------------


@dataclass(slots=True)
class SupportState:
    settings: SupportSettings = field(default_factory=SupportSettings)
    agents: dict[str, str] = field(default_factory=dict)  # user id -> online / away


class Configure(msgspec.Struct, kw_only=True, frozen=True):
    workspace_id: str
    settings: SupportSettings
    by: str
    now: datetime


class Availability(msgspec.Struct, kw_only=True, frozen=True):
    workspace_id: str
    user_id: str
    status: AgentStatus
    user_exists: bool  # a live user of the workspace (looked up by the handler)
    now: datetime


def initial() -> SupportState:
    return SupportState()


def evolve(state: SupportState, event: Event) -> SupportState:
    match event:
        case SupportConfigured():
            state.settings = event.settings
        case AgentAvailabilitySet():
            state.agents[event.user_id] = event.status
    return state


def decide(command: Any, state: SupportState) -> Decision[None]:
    match command:
        case Configure():
            settings = command.settings
            if settings.allow_anonymous and not settings.allowed_origins:
                raise InvalidRequest(
                    "Anonymous visitors need the pages they may come from.",
                    {"allowed_origins": "name at least one origin to allow anonymous visitors"},
                )
            if settings == state.settings:
                return NOTHING
            return emit(
                SupportConfigured(
                    workspace_id=command.workspace_id,
                    settings=settings,
                    by=command.by,
                    at=command.now,
                )
            )
        case Availability():
            if not command.user_exists:
                raise NotFound("User not found.", {"user_id": "not a user of this workspace"})
            if state.agents.get(command.user_id) == command.status:
                return NOTHING
            return emit(
                AgentAvailabilitySet(
                    workspace_id=command.workspace_id,
                    user_id=command.user_id,
                    status=command.status,
                    at=command.now,
                )
            )
    raise TypeError(f"not a support settings command: {type(command).__name__}")


DECIDER: Decider[Any, SupportState] = Decider(initial=initial, evolve=evolve, decide=decide)


# -- the read model ------------------------------------------------------------------------------


def define_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    ts = sa.DateTime(timezone=True)
    settings = sa.Table(
        "support_settings",
        metadata,
        sa.Column("workspace_id", sa.Text, primary_key=True),
        sa.Column("settings", JSONB, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    agents = sa.Table(
        "agent_availability",
        metadata,
        sa.Column("workspace_id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    return settings, agents


SETTINGS, AGENTS = define_tables(sa.MetaData(schema=SCHEMA))


class SupportSetupProjection(Projection):
    stream = IDENTITY.name
    subjects = SUBJECTS

    def __init__(self, name: str = "identity.support", schema: str = SCHEMA) -> None:
        self.name = name
        self.metadata = sa.MetaData(schema=schema)
        self.settings, self.agents = define_tables(self.metadata)
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        for envelope in events:
            event = envelope.event
            if isinstance(event, SupportConfigured):
                stmt = insert(self.settings).values(
                    workspace_id=event.workspace_id,
                    settings=msgspec.to_builtins(event.settings),
                    seq=envelope.seq,
                )
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[self.settings.c.workspace_id],
                        set_={"settings": stmt.excluded.settings, "seq": stmt.excluded.seq},
                        where=self.settings.c.seq < stmt.excluded.seq,
                    )
                )
            elif isinstance(event, AgentAvailabilitySet):
                stmt = insert(self.agents).values(
                    workspace_id=event.workspace_id,
                    user_id=event.user_id,
                    status=event.status,
                    at=event.at,
                    seq=envelope.seq,
                )
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[self.agents.c.workspace_id, self.agents.c.user_id],
                        set_={c: stmt.excluded[c] for c in ("status", "at", "seq")},
                        where=self.agents.c.seq < stmt.excluded.seq,
                    )
                )


async def read_setup(engine: AsyncEngine, workspace_id: str) -> SupportSetup:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(SETTINGS.c.settings).where(SETTINGS.c.workspace_id == workspace_id)
            )
        ).first()
        agents = (
            await conn.execute(
                sa.select(AGENTS.c.user_id, AGENTS.c.status, AGENTS.c.at)
                .where(AGENTS.c.workspace_id == workspace_id)
                .order_by(AGENTS.c.user_id)
            )
        ).all()
    settings = (
        msgspec.convert(row.settings, SupportSettings) if row is not None else SupportSettings()
    )
    return SupportSetup(
        workspace_id=workspace_id,
        settings=settings,
        agents=[Agent(user_id=a.user_id, status=a.status, at=a.at) for a in agents],
    )


# -- the handlers --------------------------------------------------------------------------------


class SupportSide:
    def __init__(
        self,
        shell: CommandShell[Any, SupportState],
        store: Store,
        runner: ProjectionRunner,
        *,
        read_wait: float = 2.0,
    ) -> None:
        self.shell = shell
        self.store = store
        self.runner = runner
        self.read_wait = read_wait

    def routes(self) -> list[Route]:
        return [
            (ConfigureSupport, self.shell.handler(self.configure, self.saved)),
            (SetAvailability, self.shell.handler(self.set_availability, self.saved)),
            (GetSupportSetup, self.get),
        ]

    async def _workspace(self, workspace_id: str) -> str:
        valid(workspace_id, "Workspace")
        if await self.store.workspace(workspace_id) is None:
            raise NotFound("Workspace not found.")
        return workspace_id

    async def configure(self, cmd: ConfigureSupport, _ctx: CallContext) -> Intent[Any]:
        ws = await self._workspace(cmd.workspace_id)
        command = Configure(workspace_id=ws, settings=cmd.settings, by=cmd.by, now=utcnow())
        return Intent(support_subject(ws), command, ws, cmd.by)

    async def set_availability(self, cmd: SetAvailability, _ctx: CallContext) -> Intent[Any]:
        ws = await self._workspace(cmd.workspace_id)
        user_id = valid(cmd.user_id, "User")
        command = Availability(
            workspace_id=ws,
            user_id=user_id,
            status=cmd.status,
            user_exists=await self.store.user(ws, user_id) is not None,
            now=utcnow(),
        )
        return Intent(support_subject(ws), command, ws, user_id)

    async def saved(self, cmd: Any, executed: Executed[SupportState]) -> SupportSetup:
        await self.runner.wait_for(executed.version, self.read_wait)
        return await read_setup(self.store.engine, cmd.workspace_id)

    async def get(self, query: GetSupportSetup, _ctx: CallContext) -> SupportSetup:
        if query.app_key is not None:
            found = await self.store.app_credentials(query.app_key)
            if found is None:
                raise NotFound("Workspace not found.")
            return await read_setup(self.store.engine, found.workspace_id)
        return await read_setup(self.store.engine, await self._workspace(query.workspace_id or ""))
