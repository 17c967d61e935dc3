"""The messaging decider and evolve, without any backend."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from confab.contracts.base import Event
from confab.contracts.messaging import (
    MAX_ATTACHMENTS,
    METADATA_MAX_BYTES,
    Actor,
    Attachment,
    ConversationCreated,
    MessageDeleted,
    MessageEdited,
    MessageModerated,
    MessagePosted,
    MessageReported,
    ParticipantAdded,
    ParticipantRemoved,
    ReactionAdded,
    ReactionRemoved,
    ReadMarked,
)
from confab.errors import Banned, Conflict, Forbidden, InvalidRequest, NotFound
from confab.ids import is_valid_id
from confab_messaging import domain
from confab_messaging.domain import ConversationState

T0 = datetime(2025, 1, 1, tzinfo=UTC)
WS = "ws_1"
ANN, BOB, CAT = "usr_ann", "usr_bob", "usr_cat"
TENANT = Actor(workspace_id=WS, key_id="key_1")


def user(user_id: str) -> Actor:
    return Actor(workspace_id=WS, user_id=user_id)


def fold(
    events: Iterable[Event | None], state: ConversationState | None = None
) -> ConversationState:
    state = state if state is not None else domain.initial()
    for event in events:
        assert event is not None
        state = domain.evolve(state, event)
    return state


def created(
    kind: str = "group", members: tuple[str, ...] = (ANN, BOB), conversation_id: str = "conv_1"
) -> ConversationState:
    event = domain.decide_create_conversation(
        domain.initial(),
        actor=TENANT,
        conversation_id=conversation_id,
        kind=kind,  # type: ignore[arg-type]
        participant_ids=list(members),
        unknown=[],
        title=None,
        metadata=None,
        now=T0,
    )
    return fold([event])


_counter = iter(range(10**6))


def post(
    state: ConversationState, actor: Actor, content: str = "hi", **kw: Any
) -> MessagePosted | None:
    args: dict[str, Any] = {
        "sender_id": actor.user_id,
        "content": content,
        "metadata": None,
        "attachment_ids": [],
        "reply_to": None,
        "client_msg_id": None,
        "message_id": f"msg_{next(_counter)}",
        "banned": False,
        "now": T0 + timedelta(seconds=state.last_seq),
    }
    args.update(kw)
    return domain.decide_post_message(state, actor=actor, **args)


def posted(state: ConversationState, actor: Actor, content: str = "hi", **kw: Any) -> str:
    """Post, fold, and return the message id."""
    event = post(state, actor, content, **kw)
    assert isinstance(event, MessagePosted)
    domain.evolve(state, event)
    return event.message_id


# -- ids -------------------------------------------------------------------------------------


def test_direct_ids_are_derived_from_the_workspace_and_the_pair() -> None:
    a = domain.direct_conversation_id(WS, ANN, BOB)
    assert a == domain.direct_conversation_id(WS, BOB, ANN)
    assert a != domain.direct_conversation_id("ws_2", ANN, BOB)
    assert a != domain.direct_conversation_id(WS, ANN, CAT)
    assert a.startswith("dm_") and len(a) == 29 and is_valid_id(a) and a == a.lower()


def test_client_msg_keys_are_stable_safe_and_per_sender() -> None:
    key = domain.client_msg_key("conv_1", ANN, "x\r\nEvil: 1" + "y" * 200)
    assert key == domain.client_msg_key("conv_1", ANN, "x\r\nEvil: 1" + "y" * 200)
    assert "\n" not in key and " " not in key and len(key) < 120
    assert key != domain.client_msg_key("conv_1", BOB, "x\r\nEvil: 1" + "y" * 200)
    assert key != domain.client_msg_key("conv_2", ANN, "x\r\nEvil: 1" + "y" * 200)
    assert domain.client_msg_key("conv_1", None, "a").startswith("cm:conv_1:system:")


def test_members_are_distinct_in_order_with_the_acting_user_first() -> None:
    assert domain.members_for(TENANT, [ANN, BOB, ANN]) == [ANN, BOB]
    assert domain.members_for(user(CAT), [ANN, CAT]) == [CAT, ANN]


# -- creating --------------------------------------------------------------------------------


def create(state: ConversationState | None = None, **kw: Any) -> ConversationCreated | None:
    args: dict[str, Any] = {
        "actor": TENANT,
        "conversation_id": "dm_x",
        "kind": "direct",
        "participant_ids": [ANN, BOB],
        "unknown": [],
        "title": None,
        "metadata": None,
        "now": T0,
    }
    args.update(kw)
    return domain.decide_create_conversation(state or domain.initial(), **args)


def test_a_conversation_starts_at_seq_1_with_its_participants() -> None:
    event = create(metadata={"type": "inquiry"}, title="Hi")
    assert isinstance(event, ConversationCreated)
    assert (event.seq, event.kind, event.participant_ids) == (1, "direct", [ANN, BOB])
    assert event.created_by is None and event.metadata == {"type": "inquiry"}
    by_user = create(actor=user(ANN))
    assert by_user is not None and by_user.created_by == ANN
    state = fold([event])
    assert state.exists and state.last_seq == 1 and list(state.members) == [ANN, BOB]


def test_direct_needs_exactly_two_and_an_existing_one_is_returned() -> None:
    for members in ([ANN], [ANN, BOB, CAT]):
        with pytest.raises(InvalidRequest) as err:
            create(participant_ids=members)
        assert "participant_ids" in err.value.details
    existing = fold([create()])
    assert create(existing) is None
    # A group id is never reused.
    with pytest.raises(Conflict):
        create(created("group"), kind="group", conversation_id="conv_1")


def test_unknown_participants_metadata_and_the_acting_user() -> None:
    with pytest.raises(NotFound) as err:
        create(unknown=[BOB])
    assert err.value.details == {"participant_ids": f"unknown user: {BOB}"}
    with pytest.raises(InvalidRequest) as err:
        create(metadata={"x": "y" * METADATA_MAX_BYTES})
    assert "metadata" in err.value.details
    with pytest.raises(InvalidRequest):
        create(actor=user(CAT))  # a user creates only conversations they are part of


# -- seq and evolve --------------------------------------------------------------------------


def test_every_visible_event_takes_the_next_seq_and_reports_take_none() -> None:
    state = created()
    seqs = [state.last_seq]
    m1 = posted(state, user(ANN))
    seqs.append(state.last_seq)
    steps = (
        lambda: domain.decide_edit_message(
            state, actor=user(ANN), message_id=m1, content="x", now=T0
        ),
        lambda: domain.decide_react(
            state, actor=user(BOB), message_id=m1, emoji="👍", add=True, now=T0
        ),
        lambda: domain.decide_mark_read(state, actor=user(BOB), seq=None, now=T0),
        lambda: domain.decide_add_participant(
            state, actor=TENANT, user_id=CAT, user_exists=True, now=T0
        ),
        lambda: domain.decide_moderate_message(
            state, actor=TENANT, message_id=m1, action="hide", now=T0
        ),
        lambda: domain.decide_remove_participant(state, actor=TENANT, user_id=CAT, now=T0),
    )
    for step in steps:
        event = step()
        assert event is not None and event.seq == state.last_seq + 1
        domain.evolve(state, event)
        seqs.append(state.last_seq)
    assert seqs == list(range(1, 9))
    report = domain.decide_report_message(
        state,
        actor=user(BOB),
        message_id=posted(state, user(ANN)),
        reason="spam",
        report_id="rep_1",
        now=T0,
    )
    assert isinstance(report, MessageReported) and report.seq == 0
    before = state.last_seq
    domain.evolve(state, report)
    assert state.last_seq == before


def test_folding_an_event_twice_changes_nothing() -> None:
    state = created()
    event = post(state, user(ANN), client_msg_id="c1")
    assert event is not None
    domain.evolve(state, event)
    react = domain.decide_react(
        state, actor=user(BOB), message_id=event.message_id, emoji="👍", add=True, now=T0
    )
    assert react is not None
    domain.evolve(state, react)
    snapshot = (state.last_seq, dict(state.messages), dict(state.client_keys))
    domain.evolve(state, event)
    domain.evolve(state, react)
    assert (state.last_seq, dict(state.messages), dict(state.client_keys)) == snapshot


# -- membership ------------------------------------------------------------------------------


def test_non_participants_and_missing_conversations_are_not_found() -> None:
    state = created()
    message = posted(state, user(ANN))
    with pytest.raises(NotFound):
        post(domain.initial(), user(ANN))
    stranger = user(CAT)
    for call in (
        lambda: post(state, stranger),
        lambda: domain.decide_edit_message(
            state, actor=stranger, message_id=message, content="x", now=T0
        ),
        lambda: domain.decide_delete_message(state, actor=stranger, message_id=message, now=T0),
        lambda: domain.decide_react(
            state, actor=stranger, message_id=message, emoji="👍", add=True, now=T0
        ),
        lambda: domain.decide_mark_read(state, actor=stranger, seq=None, now=T0),
        lambda: domain.check_typing(state, stranger),
        lambda: domain.decide_report_message(
            state, actor=stranger, message_id=message, reason="x", report_id="r", now=T0
        ),
        lambda: domain.decide_moderate_message(
            state, actor=stranger, message_id=message, action="hide", now=T0
        ),
        lambda: domain.decide_remove_participant(
            state, actor=stranger, user_id=stranger.user_id or "", now=T0
        ),
    ):
        with pytest.raises(NotFound):
            call()


def test_participants_change_in_groups_only_and_by_the_tenant() -> None:
    state = created()
    with pytest.raises(Forbidden):
        domain.decide_add_participant(state, actor=user(ANN), user_id=CAT, user_exists=True, now=T0)
    with pytest.raises(NotFound) as err:
        domain.decide_add_participant(state, actor=TENANT, user_id=CAT, user_exists=False, now=T0)
    assert "user_id" in err.value.details
    added = domain.decide_add_participant(
        state, actor=TENANT, user_id=CAT, user_exists=True, now=T0
    )
    assert isinstance(added, ParticipantAdded)
    domain.evolve(state, added)
    assert (
        domain.decide_add_participant(state, actor=TENANT, user_id=CAT, user_exists=True, now=T0)
        is None
    )
    # A participant may leave, not remove others.
    with pytest.raises(Forbidden):
        domain.decide_remove_participant(state, actor=user(ANN), user_id=CAT, now=T0)
    left = domain.decide_remove_participant(state, actor=user(CAT), user_id=CAT, now=T0)
    assert isinstance(left, ParticipantRemoved)
    domain.evolve(state, left)
    with pytest.raises(NotFound):
        post(state, user(CAT))
    assert domain.decide_remove_participant(state, actor=TENANT, user_id=CAT, now=T0) is None
    direct = created("direct", conversation_id="dm_1")
    with pytest.raises(InvalidRequest):
        domain.decide_add_participant(direct, actor=TENANT, user_id=CAT, user_exists=True, now=T0)
    with pytest.raises(InvalidRequest):
        domain.decide_remove_participant(direct, actor=TENANT, user_id=ANN, now=T0)


# -- posting ---------------------------------------------------------------------------------


def test_posting_as_yourself_as_a_user_or_a_system_message_as_the_tenant() -> None:
    state = created()
    mine = post(state, user(ANN))
    assert mine is not None and mine.sender_id == ANN and mine.seq == 2
    with pytest.raises(Forbidden):
        post(state, user(ANN), sender_id=BOB)
    system = post(state, TENANT, sender_id=None)
    assert system is not None and system.sender_id is None
    as_bob = post(state, TENANT, sender_id=BOB)
    assert as_bob is not None and as_bob.sender_id == BOB
    with pytest.raises(InvalidRequest) as err:
        post(state, TENANT, sender_id=CAT)
    assert "sender_id" in err.value.details


def test_banned_senders_and_invalid_content() -> None:
    state = created()
    with pytest.raises(Banned) as err:
        post(state, user(ANN), banned=True)
    assert (err.value.code, err.value.status) == ("banned", 403)
    for content in ("", "x" * 10_001):
        with pytest.raises(InvalidRequest) as invalid:
            post(state, user(ANN), content)
        assert "content" in invalid.value.details
    assert post(state, user(ANN), "x" * 10_000) is not None
    with pytest.raises(InvalidRequest) as invalid:
        post(state, user(ANN), metadata={"k": "v" * METADATA_MAX_BYTES})
    assert "metadata" in invalid.value.details


def attachment(attachment_id: str) -> Attachment:
    return Attachment(
        id=attachment_id,
        filename=f"{attachment_id}.png",
        content_type="image/png",
        size=10,
        url="https://s3.example/signed",
    )


def test_attachments_must_be_known_and_belong_to_one_message() -> None:
    state = created()
    # Media answered nothing for these (another conversation, uploader, or no such thing).
    with pytest.raises(InvalidRequest) as err:
        post(state, user(ANN), attachment_ids=["att_1", "att_2"])
    assert err.value.details == {"attachment_ids": "unknown attachment: att_1, att_2"}
    with pytest.raises(InvalidRequest) as err:
        post(
            state,
            user(ANN),
            attachment_ids=["att_1", "att_2"],
            attachments=[attachment("att_2")],
        )
    assert err.value.details == {"attachment_ids": "unknown attachment: att_1"}
    with pytest.raises(InvalidRequest):
        post(state, user(ANN), attachment_ids=[f"a{i}" for i in range(MAX_ATTACHMENTS + 1)])
    with pytest.raises(InvalidRequest) as err:
        post(state, user(ANN), attachment_ids=["att_1"] * 2, attachments=[attachment("att_1")])
    assert "at most once" in err.value.details["attachment_ids"]

    found = [attachment("att_2"), attachment("att_1")]
    event = post(state, user(ANN), attachment_ids=["att_1", "att_2"], attachments=found)
    assert isinstance(event, MessagePosted)
    assert [a.id for a in event.attachments] == ["att_1", "att_2"]  # in the message's order
    assert all(a.url is None for a in event.attachments)  # URLs expire: never in the log
    domain.evolve(state, event)
    with pytest.raises(InvalidRequest) as err:
        post(state, user(ANN), attachment_ids=["att_2"], attachments=[attachment("att_2")])
    assert err.value.details == {"attachment_ids": "already attached to another message: att_2"}

    # Deleting the message names its attachments, for media to delete them.
    deleted = domain.decide_delete_message(
        state, actor=user(ANN), message_id=event.message_id, now=T0
    )
    assert deleted is not None and deleted.attachment_ids == ["att_1", "att_2"]
    plain = posted(state, user(ANN))
    moderated = domain.decide_moderate_message(
        state,
        actor=Actor(workspace_id=WS, key_id="key_1"),
        message_id=plain,
        action="delete",
        now=T0,
    )
    assert moderated is not None and moderated.attachment_ids == []


def test_replies_must_be_local() -> None:
    state = created()
    with pytest.raises(InvalidRequest) as err:
        post(state, user(ANN), reply_to="msg_elsewhere")
    assert "reply_to" in err.value.details
    first = posted(state, user(ANN))
    reply = post(state, user(BOB), reply_to=first)
    assert reply is not None and reply.reply_to == first


def test_a_resent_client_msg_id_returns_the_original_and_appends_nothing() -> None:
    state = created()
    original = posted(state, user(ANN), client_msg_id="c-1")
    assert post(state, user(ANN), client_msg_id="c-1", content="again") is None
    assert state.message_for(ANN, "c-1") == original
    # Per sender: the same key from someone else is their own message.
    other = post(state, user(BOB), client_msg_id="c-1")
    assert other is not None
    # Even a banned sender's resend returns the original it already posted.
    assert post(state, user(ANN), client_msg_id="c-1", banned=True) is None


# -- editing and deleting --------------------------------------------------------------------


def test_edit_own_messages_only() -> None:
    state = created()
    mine = posted(state, user(ANN))
    edited = domain.decide_edit_message(
        state, actor=user(ANN), message_id=mine, content="new", now=T0
    )
    assert isinstance(edited, MessageEdited) and edited.by == ANN and edited.content == "new"
    with pytest.raises(Forbidden):
        domain.decide_edit_message(state, actor=user(BOB), message_id=mine, content="x", now=T0)
    with pytest.raises(Forbidden):
        domain.decide_edit_message(state, actor=TENANT, message_id=mine, content="x", now=T0)
    with pytest.raises(NotFound):
        domain.decide_edit_message(
            state, actor=user(ANN), message_id="msg_nope", content="x", now=T0
        )
    with pytest.raises(InvalidRequest):
        domain.decide_edit_message(state, actor=user(ANN), message_id=mine, content="", now=T0)
    fold([domain.decide_delete_message(state, actor=user(ANN), message_id=mine, now=T0)], state)
    with pytest.raises(NotFound):
        domain.decide_edit_message(state, actor=user(ANN), message_id=mine, content="x", now=T0)


def test_delete_own_once_and_the_tenant_any() -> None:
    state = created()
    mine = posted(state, user(ANN))
    with pytest.raises(Forbidden):
        domain.decide_delete_message(state, actor=user(BOB), message_id=mine, now=T0)
    with pytest.raises(NotFound):
        domain.decide_delete_message(state, actor=user(ANN), message_id="msg_nope", now=T0)
    deleted = domain.decide_delete_message(state, actor=user(ANN), message_id=mine, now=T0)
    assert isinstance(deleted, MessageDeleted) and deleted.by == ANN
    domain.evolve(state, deleted)
    assert domain.decide_delete_message(state, actor=user(ANN), message_id=mine, now=T0) is None
    by_tenant = domain.decide_delete_message(
        state, actor=TENANT, message_id=posted(state, user(BOB)), now=T0
    )
    assert isinstance(by_tenant, MessageDeleted) and by_tenant.by is None


# -- reactions and reads ---------------------------------------------------------------------


def test_one_reaction_per_user_and_emoji() -> None:
    state = created()
    mid = posted(state, user(ANN))

    def react(actor: Actor, emoji: str = "👍", add: bool = True) -> Any:
        return domain.decide_react(state, actor=actor, message_id=mid, emoji=emoji, add=add, now=T0)

    assert react(user(BOB), add=False) is None
    added = react(user(BOB))
    assert isinstance(added, ReactionAdded)
    domain.evolve(state, added)
    assert react(user(BOB)) is None
    assert isinstance(react(user(ANN)), ReactionAdded)
    assert isinstance(react(user(BOB), "🎉"), ReactionAdded)
    removed = react(user(BOB), add=False)
    assert isinstance(removed, ReactionRemoved)
    domain.evolve(state, removed)
    assert react(user(BOB), add=False) is None
    with pytest.raises(Forbidden):
        react(TENANT)
    with pytest.raises(InvalidRequest):
        react(user(BOB), "x" * 33)
    fold([domain.decide_delete_message(state, actor=user(ANN), message_id=mid, now=T0)], state)
    with pytest.raises(NotFound):
        react(user(BOB))


def test_reads_default_to_the_latest_message_and_never_move_back() -> None:
    state = created()
    assert domain.decide_mark_read(state, actor=user(BOB), seq=None, now=T0) is None  # nothing yet
    posted(state, user(ANN))
    second = posted(state, user(ANN))
    latest = state.last_message_seq
    fold(
        [
            domain.decide_react(
                state, actor=user(BOB), message_id=second, emoji="x", add=True, now=T0
            )
        ],
        state,
    )
    read = domain.decide_mark_read(state, actor=user(BOB), seq=None, now=T0)
    assert isinstance(read, ReadMarked) and read.up_to == latest == 3
    domain.evolve(state, read)
    assert domain.decide_mark_read(state, actor=user(BOB), seq=2, now=T0) is None
    assert domain.decide_mark_read(state, actor=user(BOB), seq=None, now=T0) is None
    posted(state, user(ANN))
    ahead = domain.decide_mark_read(state, actor=user(BOB), seq=10**6, now=T0)
    assert isinstance(ahead, ReadMarked) and ahead.up_to == state.last_message_seq
    with pytest.raises(Forbidden):
        domain.decide_mark_read(state, actor=TENANT, seq=None, now=T0)
    with pytest.raises(InvalidRequest):
        domain.decide_mark_read(state, actor=user(ANN), seq=-1, now=T0)


def test_typing_is_for_participants() -> None:
    state = created()
    assert domain.check_typing(state, user(ANN)) == ANN
    with pytest.raises(Forbidden):
        domain.check_typing(state, TENANT)


# -- reports and moderation ------------------------------------------------------------------


def test_reports_by_participants_with_a_reason() -> None:
    state = created()
    mid = posted(state, user(ANN))
    report = domain.decide_report_message(
        state, actor=user(BOB), message_id=mid, reason="rude", report_id="rep_1", now=T0
    )
    assert isinstance(report, MessageReported) and report.reporter_id == BOB
    assert report.report_id == "rep_1"
    for reason in ("", "x" * 1001):
        with pytest.raises(InvalidRequest):
            domain.decide_report_message(
                state, actor=user(BOB), message_id=mid, reason=reason, report_id="r", now=T0
            )
    with pytest.raises(Forbidden):
        domain.decide_report_message(
            state, actor=TENANT, message_id=mid, reason="x", report_id="r", now=T0
        )
    with pytest.raises(NotFound):
        domain.decide_report_message(
            state, actor=user(BOB), message_id="msg_nope", reason="x", report_id="r", now=T0
        )


def test_moderation_hides_restores_and_deletes_for_the_tenant_only() -> None:
    state = created()
    mid = posted(state, user(ANN))

    def moderate(action: str, actor: Actor = TENANT) -> Any:
        return domain.decide_moderate_message(
            state,
            actor=actor,
            message_id=mid,
            action=action,
            now=T0,  # type: ignore[arg-type]
        )

    with pytest.raises(Forbidden):
        moderate("hide", user(BOB))
    assert moderate("restore") is None
    hidden = moderate("hide")
    assert isinstance(hidden, MessageModerated) and hidden.by == "key_1"
    domain.evolve(state, hidden)
    assert moderate("hide") is None
    assert not state.messages[mid].visible
    with pytest.raises(NotFound):  # hidden: gone for participants
        domain.decide_react(state, actor=user(BOB), message_id=mid, emoji="x", add=True, now=T0)
    domain.evolve(state, moderate("restore"))
    assert state.messages[mid].visible
    domain.evolve(state, moderate("delete"))
    assert moderate("delete") is None and moderate("restore") is None and moderate("hide") is None
    with pytest.raises(NotFound):
        domain.decide_moderate_message(
            state, actor=TENANT, message_id="msg_nope", action="hide", now=T0
        )
