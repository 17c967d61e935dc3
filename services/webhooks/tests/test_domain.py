"""The endpoint decider and the delivery rules, without any backend: commands decided and
events folded, patterns, rotation with overlap (checked with the receivers' own library,
``standardwebhooks``), the retry schedule, Retry-After, and what each answer means."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from confab.contracts.events import Event
from confab.contracts.events.webhooks import (
    WebhookCreated,
    WebhookDeleted,
    WebhookDisabled,
    WebhookSecretRotated,
    WebhookUpdated,
)
from confab.contracts.webhooks import (
    MAX_ENDPOINTS,
    WebhookInput,
    WebhookPatch,
    matches,
    unknown_patterns,
    wants,
)
from confab.errors import Conflict, InvalidRequest, NotFound
from confab_webhooks import domain
from confab_webhooks.delivery import Signer
from confab_webhooks.domain import EndpointState, State

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
WS, OTHER = "ws_1", "ws_2"
URL = "https://hooks.example.com/in"


def decide(command: domain.Command, state: State) -> Any:
    """The one event ``command`` appends, or None when it changes nothing."""
    decision = domain.decide(command, state)
    assert len(decision.events) <= 1 and decision.result is None
    return decision.events[0] if decision.events else None


def fold(events: Iterable[Event | None], state: State = None) -> EndpointState:
    for event in events:
        assert event is not None
        state = domain.evolve(state, event)
    assert state is not None
    return state


def create(
    secret: str = "whsec_one", existing: int = 0, patterns: tuple[str, ...] = ("message.*",)
) -> domain.CreateWebhook:
    return domain.CreateWebhook(
        workspace_id=WS,
        now=NOW,
        endpoint_id="wh_1",
        given=WebhookInput(url=URL, event_types=list(patterns), description="CRM"),
        secret=secret,
        existing=existing,
    )


def created(secret: str = "whsec_one") -> EndpointState:
    return fold([decide(create(secret), domain.initial())])


def update(workspace_id: str = WS, **patch: Any) -> domain.UpdateWebhook:
    return domain.UpdateWebhook(workspace_id=workspace_id, now=LATER, patch=WebhookPatch(**patch))


def rotate(secret: str, overlap: timedelta, workspace_id: str = WS) -> domain.RotateWebhookSecret:
    return domain.RotateWebhookSecret(
        workspace_id=workspace_id, now=NOW, secret=secret, overlap=overlap
    )


def disable(reason: str = "410 Gone", workspace_id: str = WS) -> domain.DisableWebhook:
    return domain.DisableWebhook(workspace_id=workspace_id, now=LATER, reason=reason)


def delete(workspace_id: str = WS) -> domain.DeleteWebhook:
    return domain.DeleteWebhook(workspace_id=workspace_id, now=LATER)


# -- endpoints -------------------------------------------------------------------------------


def test_patterns_match_event_types_and_message_read_only_by_name() -> None:
    assert matches("message.*", "message.created") and matches("*", "user.erased")
    assert not matches("message.*", "message.read") and not matches("*", "message.read")
    assert matches("message.read", "message.read")
    assert wants(["user.*", "attachment.stored"], "attachment.stored")
    assert unknown_patterns(["message.*", "mesage.*", "conversation.updated", "*"]) == ["mesage.*"]
    with pytest.raises(InvalidRequest):
        domain.check_patterns(["messages.created"])


def test_a_webhook_is_created_once_with_its_secret_and_each_pattern_once() -> None:
    event = decide(create(patterns=("message.*", "user.*", "message.*")), None)
    assert event == WebhookCreated(
        workspace_id=WS,
        endpoint_id="wh_1",
        url=URL,
        event_types=["message.*", "user.*"],
        enabled=True,
        description="CRM",
        secret="whsec_one",
        at=NOW,
    )
    state = fold([event])
    assert state.secrets == (domain.Secret("whsec_one"),)
    assert (state.created_at, state.updated_at, state.disabled_reason) == (NOW, NOW, None)
    with pytest.raises(Conflict):  # the id is taken
        decide(create(), state)


def test_a_workspace_has_a_bounded_number_of_webhooks_and_no_unknown_patterns() -> None:
    assert decide(create(existing=MAX_ENDPOINTS - 1), None) is not None
    with pytest.raises(Conflict):
        decide(create(existing=MAX_ENDPOINTS), None)
    with pytest.raises(InvalidRequest):
        decide(create(patterns=("message.*", "mesage.*")), None)


def test_an_update_changes_only_what_is_given_and_one_that_changes_nothing_appends_nothing() -> (
    None
):
    state = created()
    assert decide(update(), state) is None
    assert decide(update(url=URL, description="CRM", enabled=True), state) is None
    event = decide(update(enabled=False), state)
    assert event == WebhookUpdated(
        workspace_id=WS,
        endpoint_id="wh_1",
        url=URL,
        event_types=["message.*"],
        enabled=False,
        description="CRM",
        at=LATER,
    )
    after = fold([event], state)
    assert (after.created_at, after.updated_at, after.secrets) == (NOW, LATER, state.secrets)
    changed = decide(update(event_types=["user.*", "user.*"], url="https://b.example/x"), state)
    assert (changed.event_types, changed.url, changed.enabled) == (
        ["user.*"],
        "https://b.example/x",
        True,
    )
    with pytest.raises(InvalidRequest):
        decide(update(event_types=["mesage.*"]), state)


def test_a_disabled_endpoint_keeps_its_reason_until_it_is_enabled_again() -> None:
    state = created()
    off = decide(disable("410 Gone"), state)
    assert off == WebhookDisabled(workspace_id=WS, endpoint_id="wh_1", reason="410 Gone", at=LATER)
    state = fold([off], state)
    assert not state.enabled and state.disabled_reason == "410 Gone"
    assert decide(disable("again"), state) is None
    state = fold([decide(update(enabled=True), state)], state)
    assert state.enabled and state.disabled_reason is None


def test_disabling_appends_nothing_for_a_missing_foreign_or_deleted_endpoint() -> None:
    state = created()
    assert decide(disable(), None) is None
    assert decide(disable(workspace_id=OTHER), state) is None
    assert decide(disable(), fold([decide(delete(), state)], state)) is None
    long = decide(disable("x" * 2000), state)
    assert long.reason == "x" * 500  # a receiver's answer is kept short


def test_a_deleted_or_foreign_endpoint_is_not_found_for_every_command_but_disable() -> None:
    state = created()
    deleted = fold([decide(delete(), state)], state)
    assert deleted.deleted and deleted.updated_at == LATER
    with pytest.raises(NotFound):
        domain.live(deleted, WS)
    for command in (update(enabled=False), rotate("whsec_two", timedelta(hours=1)), delete()):
        for where in (None, deleted):
            with pytest.raises(NotFound):
                decide(command, where)
    for command in (
        update(OTHER, enabled=False),
        rotate("whsec_two", timedelta(hours=1), OTHER),
        delete(OTHER),
    ):
        with pytest.raises(NotFound):
            decide(command, state)
    assert decide(delete(), state) == WebhookDeleted(workspace_id=WS, endpoint_id="wh_1", at=LATER)


def test_after_a_rotation_both_secrets_sign_until_the_overlap_ends() -> None:
    old, new = domain.new_secret(), domain.new_secret()
    assert old != new and old.startswith("whsec_")
    state = created(old)
    rotated = decide(rotate(new, timedelta(hours=1)), state)
    assert rotated == WebhookSecretRotated(
        workspace_id=WS,
        endpoint_id="wh_1",
        secret=new,
        previous_expires_at=NOW + timedelta(hours=1),
        at=NOW,
    )
    state = fold([rotated], state)
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


def test_a_second_rotation_drops_the_first_secret() -> None:
    state = created("whsec_one")
    state = fold([decide(rotate("whsec_two", timedelta(hours=1)), state)], state)
    state = fold([decide(rotate("whsec_three", timedelta(0)), state)], state)
    assert [s.value for s in state.secrets] == ["whsec_three", "whsec_two"]
    assert domain.signing_secrets(state.secrets, NOW) == ["whsec_three"]  # no overlap


def test_the_public_webhook_shows_the_state_but_never_a_secret() -> None:
    state = fold([decide(disable("failing for days"), created())], created())
    shown = domain.public(state)
    assert (shown.id, shown.url, shown.event_types, shown.enabled) == (
        "wh_1",
        URL,
        ["message.*"],
        False,
    )
    assert shown.disabled_reason == "failing for days" and "secret" not in str(shown)


def test_a_value_that_is_not_a_webhook_command_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        domain.decide(WebhookPatch(), created())  # type: ignore[arg-type]


# -- delivery rules ------------------------------------------------------------------------


def test_a_retry_schedule_parses_with_repeats_and_refuses_nonsense() -> None:
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


def test_retry_after_is_seconds_or_an_http_date() -> None:
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
def test_an_answer_means_delivered_gone_endpoint_down_or_refused(
    status: int | None, kind: str
) -> None:
    assert domain.outcome(status) == kind


def test_a_queued_row_has_every_column_of_the_table_as_the_sender_reads_it() -> None:
    """The intake writes ``QUEUED`` (all but ``requeued``, which starts false), and the
    rows it hands the sender have every column: a column added to the table and not to
    these fails here, not in a sender that cannot find it."""
    import sqlalchemy as sa

    from confab_webhooks.projections import (
        PENDING,
        PER_DELIVERY,
        PER_EVENT,
        PER_OUTCOME,
        QUEUED,
        _queue_statement,
    )
    from confab_webhooks.store import define_tables

    endpoints, deliveries, _ = define_tables(sa.MetaData(schema="webhooks"))
    columns = {c.name for c in deliveries.columns}
    assert set(QUEUED) | {"requeued"} == columns
    assert set(PENDING) <= columns
    # Each column written comes from one place: the event, the delivery, or the intake.
    assert len(set(QUEUED)) == len(QUEUED)
    assert not set(PER_EVENT) & set(PER_DELIVERY)
    assert not set(PER_OUTCOME) & (set(PER_EVENT) | set(PER_DELIVERY))
    sql = str(_queue_statement(deliveries, endpoints))
    assert "INSERT INTO webhooks.deliveries" in sql
    assert "CAST(CAST(:e_ref AS TEXT[]) AS JSONB[])" in sql  # JSON goes in as text, per event
    assert "CAST(:e_stored_at AS TIMESTAMP WITH TIME ZONE[])" in sql
    assert "CAST(:d_id AS BIGINT[])" in sql  # ids taken before the row is written
    assert "CAST(:o_last_attempt_at AS TIMESTAMP WITH TIME ZONE[])" in sql  # once per outcome
    assert "RETURNING" not in sql
    assert sql.endswith("ON CONFLICT ON CONSTRAINT deliveries_once DO NOTHING")
    assert "ON CONFLICT" not in str(_queue_statement(deliveries, endpoints, again=False))


async def test_a_conversation_events_body_is_made_once_until_anything_changes() -> None:
    from confab_webhooks.render import Renderer

    renderer = Renderer(None, None)  # type: ignore[arg-type]  # nothing here reads the log
    made: list[int] = []

    async def data(row: dict[str, Any]) -> dict[str, Any]:
        made.append(row["seq"])
        return {"n": len(made)}

    renderer._data = data  # type: ignore[method-assign]
    row = {
        "stream": "CONVERSATIONS",
        "seq": 7,
        "event_type": "message.created",
        "stored_at": "2026-12-06T00:00:00Z",
        "workspace_id": "ws",
        "conversation_id": "c",
        "event_seq": 3,
    }
    first = await renderer.body(row)
    assert await renderer.body(row) == first  # a second endpoint: the same bytes
    assert made == [7]
    renderer.erase("ws", "u")  # anything that can change a body starts a new generation
    assert await renderer.body(row) != first
    assert made == [7, 7]
    user_row = {**row, "stream": "IDENTITY", "conversation_id": None}
    await renderer.body(user_row)
    await renderer.body(user_row)
    assert made == [7, 7, 7, 7]  # other streams are made every time


async def test_a_fold_drops_the_kept_bodies_of_its_own_conversation_only() -> None:
    from datetime import UTC, datetime

    from confab.contracts.events.messaging import MessagePosted
    from confab.conversation import ConversationView
    from confab.events import Envelope
    from confab_webhooks.render import Renderer

    renderer = Renderer(None, None)  # type: ignore[arg-type]  # nothing here reads the log
    made: list[tuple[str, int]] = []

    async def data(row: dict[str, Any]) -> dict[str, Any]:
        made.append((row["conversation_id"], row["seq"]))
        return {"n": len(made)}

    renderer._data = data  # type: ignore[method-assign]

    def row(conversation: str, seq: int) -> dict[str, Any]:
        return {
            "stream": "CONVERSATIONS",
            "seq": seq,
            "event_type": "message.created",
            "stored_at": "2026-12-06T00:00:00Z",
            "workspace_id": "ws",
            "conversation_id": conversation,
            "event_seq": 1,
        }

    def posted(conversation: str, seq: int) -> Envelope:
        event = MessagePosted(
            conversation_id=conversation,
            seq=1,
            at=datetime.now(UTC),
            message_id=f"m{seq}",
            sender_id="u",
            content="hello",
        )
        return stored(event, seq)

    for conversation in ("a", "b"):
        renderer.views[("ws", conversation)] = ConversationView(conversation, "ws")
    await renderer.body(row("a", 1))
    await renderer.body(row("b", 2))
    await renderer.take([posted("b", 3)])  # b changed; a did not
    await renderer.body(row("a", 1))
    await renderer.body(row("b", 2))
    assert made == [("a", 1), ("b", 2), ("b", 2)]
    await renderer.take([posted("c", 4)])  # a conversation not held here: nothing to drop
    await renderer.body(row("a", 1))
    assert made == [("a", 1), ("b", 2), ("b", 2)]


async def test_a_body_made_at_once_from_what_is_held_is_the_body_rendered_in_a_task() -> None:
    """``Renderer.now`` (the sender's usual path, no task) makes, for every kind of
    conversation event, the body ``body`` makes; and declines when a profile is stale or
    missing, or the view has not reached the event, so ``body`` reads the log."""
    from confab.contracts.events.messaging import (
        ConversationCreated,
        MessageDeleted,
        MessageEdited,
        MessagePosted,
        MessageReported,
        ParticipantAdded,
        ReadMarked,
    )
    from confab.conversation import ConversationView
    from confab_webhooks.projections import conversation_webhook
    from confab_webhooks.render import Renderer, UserView

    at = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    c = "conv_1"
    events = [
        ConversationCreated(
            conversation_id=c,
            seq=1,
            at=at,
            kind="group",
            participant_ids=["u1", "u2"],
            created_by="u1",
        ),
        MessagePosted(
            conversation_id=c, seq=2, at=at, message_id="m1", sender_id="u1", content="hi"
        ),
        MessageEdited(conversation_id=c, seq=3, at=at, message_id="m1", content="hello", by="u1"),
        ParticipantAdded(conversation_id=c, seq=4, at=at, user_id="u3", by="u1"),
        ReadMarked(conversation_id=c, seq=5, at=at, user_id="u2", up_to=2),
        MessagePosted(
            conversation_id=c, seq=6, at=at, message_id="m2", sender_id="u2", content="yo"
        ),
        MessageDeleted(conversation_id=c, seq=7, at=at, message_id="m2", by="u2"),
        MessageReported(
            conversation_id=c,
            seq=0,
            at=at,
            report_id="r1",
            message_id="m1",
            reporter_id="u2",
            reason="spam",
        ),
    ]
    renderer = Renderer(None, None)  # type: ignore[arg-type]  # nothing here reads the log
    view = renderer.views[("ws", c)] = ConversationView(c, "ws")
    for user in ("u1", "u2", "u3"):
        renderer.users[("ws", user)] = UserView(id=user, name=user.upper(), created_at=at)
    rows = []
    classified_by_the_fold = 0
    for stream_seq, event in enumerate(events, 1):
        envelope = stored(event, stream_seq, at)
        found = conversation_webhook(envelope)
        folded = await renderer.take([envelope])
        if stream_seq in folded:
            # The intake classifies by the renderer's entry where it holds the view: the
            # same webhook as the scratch fold's (message.deleted's seq is not kept).
            assert conversation_webhook(envelope, folded[stream_seq]) == found
            classified_by_the_fold += 1
        if found is None:
            continue
        rows.append(
            {
                "stream": "CONVERSATIONS",
                "seq": stream_seq,
                "event_type": found.event_type,
                "stored_at": at,
                "workspace_id": "ws",
                "conversation_id": c,
                "event_seq": found.event_seq,
                "lane": c,
                "ref": msgspec.to_builtins(found.ref),
            }
        )
    assert classified_by_the_fold == len(events) - 1  # all but the report
    # A report has no place in the conversation's own order: it is not folded, and a view
    # reaches it only by reading the log (here, as if it had).
    report = rows[-1]
    assert report["event_type"] == "message.reported" and view.stream_seq == report["seq"] - 1
    assert renderer.now(report) is None
    view.stream_seq = report["seq"]
    assert {r["event_type"] for r in rows} >= {
        "conversation.created",
        "message.created",
        "message.updated",
        "participant.added",
        "message.deleted",
        "message.reported",
    }
    for row in rows:
        made = renderer.now(row)
        assert made is not None, row["event_type"]
        renderer._changed()  # nothing kept: ``body`` makes its own
        assert await renderer.body(row) == made, row["event_type"]
        renderer._changed()

    edited = next(r for r in rows if r["event_type"] == "message.updated")
    renderer.stale.add(("ws", "u1"))  # the sender's profile changed: read it again first
    assert renderer.now(edited) is None
    renderer.stale.clear()
    del renderer.users[("ws", "u1")]
    assert renderer.now(edited) is None
    renderer.users[("ws", "u1")] = UserView(id="u1", name="U1", created_at=at)
    assert renderer.now(edited) is not None
    renderer._changed()
    view.stream_seq = edited["seq"] - 1  # the view has not reached the event yet
    assert renderer.now(edited) is None


def stored(event: Any, stream_seq: int, at: datetime | None = None) -> Any:
    """A conversation event as the log gives it, in workspace ``ws``."""
    from confab.events import Envelope

    return Envelope(
        event=event,
        type=event.type,
        schema=1,
        msg_id=f"id{stream_seq}",
        workspace="ws",
        actor="u",
        correlation="",
        subject=f"conv.evt.ws.{event.conversation_id}",
        seq=stream_seq,
        time=at,
    )
