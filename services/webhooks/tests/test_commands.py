"""Command handling of webhooks over the in-memory log: the shell and the endpoint decider.

No NATS, no PostgreSQL: the endpoint decider runs in a ``CommandShell`` on a
``MemoryLog`` (``WEBHOOKS``), with what a handler makes up or looks up first passed in
the commands. Two shells on one log are two webhooks processes with their own caches
(the sender of one may disable an endpoint while the API of another changes it). The
same paths against the real backends are in ``tests/test_webhooks.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from confab import aggregate
from confab.aggregate import Aggregates, Executed
from confab.contracts.events.webhooks import (
    WebhookCreated,
    WebhookDeleted,
    WebhookDisabled,
    WebhookSecretRotated,
    WebhookUpdated,
    subject,
)
from confab.contracts.webhooks import WebhookInput, WebhookPatch
from confab.errors import NotFound
from confab.memlog import MemoryLog
from confab.shell import CommandShell
from confab_webhooks import domain
from confab_webhooks.commands import Shell, intent, with_secret
from confab_webhooks.domain import State

T0 = datetime(2026, 1, 2, tzinfo=UTC)
WS = "ws_1"
ENDPOINT = "wh_1"
SUBJECT = subject(WS, ENDPOINT)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregate, "BACKOFF_SECONDS", 0.0)


def process(log: MemoryLog) -> Shell:
    return CommandShell(Aggregates(log, domain.DECIDER))


async def run(shell: Shell, command: domain.Command, actor: str = "key_1") -> Executed[State]:
    return await shell.run(intent(WS, ENDPOINT, command, actor))


def update(**patch: Any) -> domain.UpdateWebhook:
    return domain.UpdateWebhook(workspace_id=WS, now=T0, patch=WebhookPatch(**patch))


def disable(reason: str = "The endpoint answered 410 Gone.") -> domain.DisableWebhook:
    return domain.DisableWebhook(workspace_id=WS, now=T0, reason=reason)


def create(existing: int = 0) -> domain.CreateWebhook:
    return domain.CreateWebhook(
        workspace_id=WS,
        now=T0,
        endpoint_id=ENDPOINT,
        given=WebhookInput(url="https://hooks.example.com/in", event_types=["message.*"]),
        secret="whsec_one",
        existing=existing,
    )


async def created(log: MemoryLog) -> Shell:
    shell = process(log)
    made = await run(shell, create())
    assert isinstance(made.event, WebhookCreated) and made.version == 1
    return shell


async def test_the_replies_show_the_secret_the_command_made_and_the_overlap_after_a_rotation() -> (
    None
):
    log = MemoryLog("WEBHOOKS")
    shell = process(log)
    made = await run(shell, create(existing=3))
    shown = with_secret(domain.live(made.state, WS))
    assert (shown.id, shown.secret, shown.previous_secret_expires_at) == (
        ENDPOINT,
        "whsec_one",
        None,
    )
    overlap = timedelta(hours=1)
    rotate = domain.RotateWebhookSecret(
        workspace_id=WS, now=T0, secret="whsec_two", overlap=overlap
    )
    rotated = await run(shell, rotate)
    shown = with_secret(domain.live(rotated.state, WS))
    assert (shown.secret, shown.previous_secret_expires_at) == ("whsec_two", T0 + overlap)
    assert log.envelope(rotated.version).actor == "key_1"


async def test_a_change_by_a_process_with_a_stale_cache_is_decided_again_and_keeps_a_rotation() -> (
    None
):
    log = MemoryLog("WEBHOOKS")
    first = await created(log)
    second = process(log)
    await second.aggregates.load(SUBJECT)  # second caches the endpoint before the rotation
    rotate = domain.RotateWebhookSecret(
        workspace_id=WS, now=T0, secret="whsec_two", overlap=timedelta(hours=1)
    )
    await run(first, rotate)
    updated = await run(second, update(description="CRM"))  # loses the race, decides again
    assert [type(e) for e in log.events(SUBJECT)] == [
        WebhookCreated,
        WebhookSecretRotated,
        WebhookUpdated,
    ]
    assert log.appends > log.last_seq
    state = domain.live(updated.state, WS)
    assert [s.value for s in state.secrets] == ["whsec_two", "whsec_one"]
    assert state.description == "CRM"


async def test_an_update_that_looks_like_nothing_on_a_stale_cache_is_checked_against_the_log() -> (
    None
):
    log = MemoryLog("WEBHOOKS")
    first = await created(log)
    await run(first, update(enabled=False))
    second = process(log)
    await second.aggregates.load(SUBJECT)  # second caches it disabled
    await run(first, update(enabled=True))
    again = await run(second, update(enabled=False))  # nothing on its cache; the log says on
    assert isinstance(again.event, WebhookUpdated) and again.event.enabled is False
    enabled = [e.enabled for e in log.events(SUBJECT) if isinstance(e, WebhookUpdated)]
    assert enabled == [False, True, False]


async def test_senders_of_two_processes_disable_an_endpoint_once() -> None:
    log = MemoryLog("WEBHOOKS")
    first = await created(log)
    second = process(log)
    await second.aggregates.load(SUBJECT)  # second caches it enabled
    one = await run(first, disable(), actor="webhooks")
    other = await run(second, disable("Failing for 5 days."), actor="webhooks")
    assert isinstance(one.event, WebhookDisabled) and other.events == ()
    assert [e.reason for e in log.events(SUBJECT) if isinstance(e, WebhookDisabled)] == [
        "The endpoint answered 410 Gone."
    ]
    assert other.state is not None and other.state.disabled_reason == one.event.reason


async def test_a_deletion_by_one_process_holds_against_another_s_stale_cache() -> None:
    log = MemoryLog("WEBHOOKS")
    first = await created(log)
    second = process(log)
    await second.aggregates.load(SUBJECT)  # second caches the live endpoint
    await run(first, domain.DeleteWebhook(workspace_id=WS, now=T0))
    rotate = domain.RotateWebhookSecret(
        workspace_id=WS, now=T0, secret="whsec_two", overlap=timedelta(0)
    )
    for command in (update(enabled=False), rotate, domain.DeleteWebhook(workspace_id=WS, now=T0)):
        with pytest.raises(NotFound):  # decided on the cache, then refused by the log
            await run(second, command)
    gone = await run(second, disable())
    assert gone.events == ()
    assert [type(e) for e in log.events(SUBJECT)] == [WebhookCreated, WebhookDeleted]
