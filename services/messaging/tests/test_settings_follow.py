"""Two messaging copies over real JetStream: a settings change made through one is in
force on the other when its call returns, though posts read the settings from memory;
and the settings decider's link-preview switch."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from confab import bus
from confab.authority import Change, Follower, fence
from confab.contracts.events.moderation import LinkPreviewsChanged
from confab.contracts.messaging import Actor
from confab.contracts.moderation import SetUserShadowBan
from confab.eventlog import JetStreamLog
from confab.rpc import CallContext
from confab_messaging.workspace import (
    SETTINGS_WATCH,
    SetLinkPreviews,
    SettingsState,
    WorkspaceSettings,
    decide,
    evolve,
    settings_change,
)


@pytest.fixture
async def nc(backends: Any) -> AsyncIterator[NATS]:
    client = await bus.connect(backends.nats_url, "test")
    yield client
    await client.close()


@asynccontextmanager
async def copy(nc: NATS, hold: asyncio.Event | None = None) -> AsyncIterator[WorkspaceSettings]:
    """One messaging copy's settings side, as ``app.setup`` wires it; ``hold`` keeps its
    follower from finishing a change until set."""
    js = nc.jetstream()
    settings = WorkspaceSettings(
        JetStreamLog(nc, js, bus.CONVERSATIONS.name),
        fence=lambda seq: fence(js, seq, timeout=30, watch=SETTINGS_WATCH),
    )

    async def changed(change: Change) -> None:
        if hold is not None:
            await hold.wait()
        await settings.changed(change)

    follower = Follower(js, "test-settings", changed, SETTINGS_WATCH)
    await follower.start()
    try:
        yield settings
    finally:
        await follower.stop()


def shadow_ban(workspace: str, user: str) -> SetUserShadowBan:
    return SetUserShadowBan(
        actor=Actor(workspace_id=workspace, key_id="key_test"), user_id=user, banned=True
    )


async def test_a_change_through_one_copy_is_in_force_on_the_other_when_it_returns(
    nc: NATS,
) -> None:
    await bus.ensure_streams(nc.jetstream(), [bus.CONVERSATIONS])
    workspace = f"ws_{uuid.uuid4().hex[:8]}"
    hold = asyncio.Event()
    async with copy(nc) as a, copy(nc, hold) as b:
        assert (await b.policy(workspace))[1] == frozenset()  # cached by b from here on
        handler = dict(a.routes())[SetUserShadowBan]
        call = asyncio.create_task(handler(shadow_ban(workspace, "usr_1"), CallContext()))
        # b has not applied the change yet: the call does not return.
        done, _ = await asyncio.wait({call}, timeout=0.5)
        assert not done
        assert (await b.policy(workspace))[1] == frozenset()
        hold.set()
        await asyncio.wait_for(call, 30)
        assert (await b.policy(workspace))[1] == frozenset({"usr_1"})


def test_only_settings_subjects_are_settings_changes() -> None:
    assert settings_change("conv.evt.ws_1._settings", "x", 7) == Change(
        "x", "ws_1", "settings", "_settings", 7
    )
    assert settings_change("conv.evt.ws_1.cnv_1", "x", 7) is None
    assert settings_change("conv.evt.ws_1._settings.more", "x", 7) is None


def test_the_link_preview_switch_is_decided_from_the_state() -> None:
    now = datetime.now(UTC)
    off = SetLinkPreviews(workspace_id="ws_1", enabled=False, by="key_1", now=now)
    state = SettingsState()
    assert state.link_previews is True  # on unless turned off
    (event,) = decide(off, state).events
    assert event == LinkPreviewsChanged(workspace_id="ws_1", enabled=False, by="key_1", at=now)
    state = evolve(state, event)
    assert state.link_previews is False
    assert not decide(off, state).events  # already off: nothing to store
