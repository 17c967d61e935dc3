"""Followers and the fence over real NATS: a revoking call's reply waits for every live
follower to have applied its event, and only for live ones."""

import asyncio
import uuid
from datetime import UTC, datetime

from nats.aio.client import Client as NATS

from confab import bus
from confab.authority import USER_BANNED, Change, Follower, fence
from confab.contracts.events.identity import UserBanned, UserUpserted, subject
from confab.eventlog import append


async def ban(nc: NATS, workspace: str, user: str) -> int:
    event = UserBanned(workspace_id=workspace, user_id=user, at=datetime.now(UTC))
    stored = await append(
        nc.jetstream(),
        bus.IDENTITY.name,
        subject(workspace, "user", user),
        event,
        msg_id=uuid.uuid4().hex,
        workspace=workspace,
    )
    return stored.seq


async def test_the_fence_waits_for_a_slow_follower_and_not_for_a_gone_one(nc: NATS) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [bus.IDENTITY])
    workspace = f"ws_{uuid.uuid4().hex[:8]}"
    entered, release = asyncio.Event(), asyncio.Event()
    seen: list[Change] = []

    async def slow(change: Change) -> None:
        if change.workspace_id == workspace:
            seen.append(change)
            entered.set()
            await release.wait()

    follower = Follower(js, "test", slow)
    await follower.start()
    gone = Follower(js, "test", lambda _change: None)
    await gone.start()
    await gone._unsubscribe()  # its process died: no subscriber bound any more
    try:
        seq = await ban(nc, workspace, "usr_1")
        fenced = asyncio.create_task(fence(js, seq, timeout=30))
        await asyncio.wait_for(entered.wait(), 10)
        # The follower is applying the change: the reply may not leave yet.
        assert not fenced.done()
        release.set()
        assert await asyncio.wait_for(fenced, 30)
        assert seen == [Change(USER_BANNED, workspace, "user", "usr_1", seq)]
        assert follower.applied >= seq
    finally:
        release.set()
        await follower.stop()
        await gone.stop()


async def test_a_stuck_follower_holds_the_fence_only_until_its_timeout(nc: NATS) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [bus.IDENTITY])
    workspace = f"ws_{uuid.uuid4().hex[:8]}"
    release = asyncio.Event()

    async def stuck(change: Change) -> None:
        if change.workspace_id == workspace:
            await release.wait()

    follower = Follower(js, "test", stuck)
    await follower.start()
    try:
        seq = await ban(nc, workspace, "usr_1")
        assert await fence(js, seq, timeout=0.3) is False
    finally:
        release.set()
        await follower.stop()


async def test_only_revoking_changes_reach_the_handler(nc: NATS) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [bus.IDENTITY])
    workspace = f"ws_{uuid.uuid4().hex[:8]}"
    seen: list[str] = []
    follower = Follower(
        js, "test", lambda c: seen.append(c.type) if c.workspace_id == workspace else None
    )
    await follower.start()
    try:
        upserted = UserUpserted(
            workspace_id=workspace,
            user_id="usr_1",
            external_id="e",
            name="Ann",
            at=datetime.now(UTC),
        )
        await append(
            js,
            bus.IDENTITY.name,
            subject(workspace, "user", "usr_1"),
            upserted,
            msg_id=uuid.uuid4().hex,
            workspace=workspace,
        )
        assert await fence(js, await ban(nc, workspace, "usr_1"), timeout=10)
        assert seen == [USER_BANNED]
    finally:
        await follower.stop()
