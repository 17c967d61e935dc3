"""The endpoint decider and the delivery rules, without I/O: patterns, rotation with
overlap (checked with the receivers' own library, ``standardwebhooks``), the retry
schedule, Retry-After, and what each answer means."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from confab.contracts.webhooks import (
    WebhookInput,
    WebhookPatch,
    matches,
    unknown_patterns,
    wants,
)
from confab.errors import InvalidRequest, NotFound
from confab_webhooks import domain
from confab_webhooks.delivery import Signer

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def created(secret: str = "") -> domain.EndpointState:
    event = domain.decide_create(
        None,
        workspace_id="ws_1",
        endpoint_id="wh_1",
        given=WebhookInput(url="https://hooks.example.com/in", event_types=["message.*"]),
        secret=secret or domain.new_secret(),
        existing=0,
        now=NOW,
    )
    state = domain.evolve(None, event)
    assert state is not None
    return state


def test_globs_match_event_types_and_message_read_only_by_name() -> None:
    assert matches("message.*", "message.created") and matches("*", "user.erased")
    assert not matches("message.*", "message.read") and not matches("*", "message.read")
    assert matches("message.read", "message.read")
    assert wants(["user.*", "attachment.stored"], "attachment.stored")
    assert unknown_patterns(["message.*", "mesage.*", "conversation.updated", "*"]) == [
        "mesage.*",
        "conversation.updated",
    ]
    with pytest.raises(InvalidRequest):
        domain.check_patterns(["messages.created"])


def test_update_changes_only_what_is_given_and_nothing_is_nothing() -> None:
    state = created()
    assert domain.decide_update(state, workspace_id="ws_1", patch=WebhookPatch(), now=NOW) is None
    event = domain.decide_update(
        state, workspace_id="ws_1", patch=WebhookPatch(enabled=False), now=NOW
    )
    assert event is not None and event.url == state.url and event.enabled is False
    with pytest.raises(NotFound):
        domain.decide_update(state, workspace_id="ws_2", patch=WebhookPatch(), now=NOW)


def test_disabled_with_a_reason_and_enabled_again_clears_it() -> None:
    state = created()
    off = domain.decide_disable(state, workspace_id="ws_1", reason="410 Gone", now=NOW)
    state = domain.evolve(state, off)  # type: ignore[arg-type]
    assert state is not None and not state.enabled and state.disabled_reason == "410 Gone"
    assert domain.decide_disable(state, workspace_id="ws_1", reason="again", now=NOW) is None
    on = domain.decide_update(state, workspace_id="ws_1", patch=WebhookPatch(enabled=True), now=NOW)
    state = domain.evolve(state, on)  # type: ignore[arg-type]
    assert state is not None and state.enabled and state.disabled_reason is None


def test_deleted_endpoints_are_not_found() -> None:
    state = domain.evolve(created(), domain.decide_delete(created(), workspace_id="ws_1", now=NOW))
    with pytest.raises(NotFound):
        domain.live(state, "ws_1")


def test_after_a_rotation_both_secrets_sign_until_the_overlap_ends() -> None:
    old, new = domain.new_secret(), domain.new_secret()
    state = created(old)
    rotated = domain.decide_rotate(
        state, workspace_id="ws_1", secret=new, overlap=timedelta(hours=1), now=NOW
    )
    state = domain.evolve(state, rotated)
    assert state is not None
    body = b'{"type":"message.created"}'
    signer = Signer()
    during = datetime.now(UTC)
    live = domain.signing_secrets(state.secrets, NOW + timedelta(minutes=59))
    assert live == [new, old]
    headers = signer.headers("msg_conversations_7", body, live, during)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # a receiver on either secret accepts it
        assert Webhook(secret).verify(body, headers) == {"type": "message.created"}
    after = domain.signing_secrets(state.secrets, NOW + timedelta(hours=1, seconds=1))
    assert after == [new]
    headers = signer.headers("msg_conversations_8", body, after, during)
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # a changed body is refused
        Webhook(new).verify(body + b" ", headers)


def test_schedules_parse_with_repeats_and_refuse_nonsense() -> None:
    assert domain.parse_schedule("5, 300,1800") == (5.0, 300.0, 1800.0)
    assert domain.parse_schedule("0.2,1*3") == (0.2, 1.0, 1.0, 1.0)
    default = domain.parse_schedule("5,300,1800,7200,18000,36000,36000")
    assert sum(default) >= 24 * 3600  # at least a day of retries
    for bad in ("", "x", "-1", "1*0", "1*x"):
        with pytest.raises(ValueError):
            domain.parse_schedule(bad)


def test_retry_delays_follow_the_schedule_with_jitter_then_give_up() -> None:
    schedule = (5.0, 300.0)
    rand = random.Random(7)
    delays = [domain.retry_delay(schedule, 1, rand=rand) for _ in range(200)]
    assert all(d is not None and 4.0 <= d <= 6.0 for d in delays)
    assert len({round(d, 3) for d in delays if d is not None}) > 100  # jittered
    second = domain.retry_delay(schedule, 2, rand=rand)
    assert second is not None and 240 <= second <= 360
    assert domain.retry_delay(schedule, 3) is None
    assert domain.retry_delay(schedule, 1, retry_after=42) == 42
    assert domain.retry_delay(schedule, 1, retry_after=10**6, max_retry_after=3600) == 3600


def test_retry_after_as_seconds_or_a_date() -> None:
    assert domain.parse_retry_after("7", NOW) == 7
    assert domain.parse_retry_after("Fri, 02 Jan 2026 03:05:05 GMT", NOW) == 60
    assert domain.parse_retry_after("soon", NOW) is None
    assert domain.parse_retry_after(None, NOW) is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, domain.DELIVERED),
        (204, domain.DELIVERED),
        (410, domain.GONE),
        (None, domain.ENDPOINT_DOWN),
        (500, domain.ENDPOINT_DOWN),
        (503, domain.ENDPOINT_DOWN),
        (429, domain.ENDPOINT_DOWN),
        (408, domain.ENDPOINT_DOWN),
        (400, domain.REFUSED),
        (302, domain.REFUSED),
        (404, domain.REFUSED),
    ],
)
def test_what_an_answer_means(status: int | None, kind: str) -> None:
    assert domain.outcome(status) == kind
