"""The conversation decider: commands decided and events folded, without any backend."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from confab.contracts.events import Event
from confab.contracts.events.messaging import (
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
from confab.contracts.events.moderation import (
    MessageShadowDeleted,
    MessageShadowed,
    MessageShadowEdited,
)
from confab.contracts.messaging import MAX_ATTACHMENTS, METADATA_MAX_BYTES, Actor
from confab.decider import Decision
from confab.errors import Banned, Conflict, Forbidden, InvalidRequest, Muted, NotFound
from confab.ids import is_valid_id
from confab_messaging import domain
from confab_messaging.domain import ConversationState, Resent

T0 = datetime(2025, 1, 1, tzinfo=UTC)
WS = "ws_1"
ANN, BOB, CAT = "usr_ann", "usr_bob", "usr_cat"
TENANT = Actor(workspace_id=WS, key_id="key_1")


def user(user_id: str) -> Actor:
    return Actor(workspace_id=WS, user_id=user_id)


def one(decision: Decision[Any]) -> Any:
    """The one event a decision appends, or None when it appends nothing."""
    assert len(decision.events) <= 1
    return decision.events[0] if decision.events else None


def decide(state: ConversationState, command: domain.Command) -> Any:
    return one(domain.decide(command, state))


def fold(
    events: Iterable[Event | None], state: ConversationState | None = None
) -> ConversationState:
    state = state if state is not None else domain.initial()
    for event in events:
        assert event is not None
        state = domain.evolve(state, event)
    return state


def create(state: ConversationState | None = None, **kw: Any) -> ConversationCreated | None:
    fields: dict[str, Any] = {
        "actor": TENANT,
        "now": T0,
        "conversation_id": "dm_x",
        "kind": "direct",
        "participant_ids": [ANN, BOB],
    }
    fields.update(kw)
    return decide(state or domain.initial(), domain.CreateConversation(**fields))


def created(
    kind: str = "group", members: tuple[str, ...] = (ANN, BOB), conversation_id: str = "conv_1"
) -> ConversationState:
    return fold([create(kind=kind, participant_ids=list(members), conversation_id=conversation_id)])


_counter = iter(range(10**6))


def posting(state: ConversationState, actor: Actor, content: str = "hi", **kw: Any) -> Any:
    """The decision on a post (``message_id`` and ``now`` made up)."""
    fields: dict[str, Any] = {
        "actor": actor,
        "now": T0 + timedelta(seconds=state.last_seq),
        "sender_id": actor.user_id,
        "content": content,
        "message_id": f"msg_{next(_counter)}",
    }
    fields.update(kw)
    return domain.decide(domain.PostMessage(**fields), state)


def post(state: ConversationState, actor: Actor, content: str = "hi", **kw: Any) -> Any:
    return one(posting(state, actor, content, **kw))


def posted(state: ConversationState, actor: Actor, content: str = "hi", **kw: Any) -> str:
    """Post, fold, and return the message id."""
    event = post(state, actor, content, **kw)
    assert isinstance(event, MessagePosted)
    domain.evolve(state, event)
    return event.message_id


def edit(state: ConversationState, actor: Actor, message_id: str, content: str = "x") -> Any:
    command = domain.EditMessage(actor=actor, now=T0, message_id=message_id, content=content)
    return decide(state, command)


def delete(state: ConversationState, actor: Actor, message_id: str) -> Any:
    return decide(state, domain.DeleteMessage(actor=actor, now=T0, message_id=message_id))


def react(
    state: ConversationState, actor: Actor, message_id: str, emoji: str = "👍", add: bool = True
) -> Any:
    command = domain.React(actor=actor, now=T0, message_id=message_id, emoji=emoji, add=add)
    return decide(state, command)


def mark_read(state: ConversationState, actor: Actor, seq: int | None = None) -> Any:
    return decide(state, domain.MarkRead(actor=actor, now=T0, seq=seq))


def add(state: ConversationState, actor: Actor, user_id: str, exists: bool = True) -> Any:
    command = domain.AddParticipant(actor=actor, now=T0, user_id=user_id, user_exists=exists)
    return decide(state, command)


def remove(state: ConversationState, actor: Actor, user_id: str) -> Any:
    return decide(state, domain.RemoveParticipant(actor=actor, now=T0, user_id=user_id))


def report(state: ConversationState, actor: Actor, message_id: str, reason: str = "x") -> Any:
    command = domain.ReportMessage(
        actor=actor, now=T0, message_id=message_id, reason=reason, report_id="rep_1"
    )
    return decide(state, command)


def moderate(state: ConversationState, actor: Actor, message_id: str, action: str) -> Any:
    command = domain.ModerateMessage(
        actor=actor,
        now=T0,
        message_id=message_id,
        action=action,  # type: ignore[arg-type]
    )
    return decide(state, command)


# -- ids -------------------------------------------------------------------------------------


def test_a_direct_conversation_id_is_derived_from_the_workspace_and_the_pair() -> None:
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


def test_a_conversation_starts_at_seq_1_with_its_participants() -> None:
    event = create(metadata={"type": "inquiry"}, title="Hi")
    assert isinstance(event, ConversationCreated)
    assert (event.seq, event.kind, event.participant_ids) == (1, "direct", [ANN, BOB])
    assert event.created_by is None and event.metadata == {"type": "inquiry"}
    by_user = create(actor=user(ANN))
    assert by_user is not None and by_user.created_by == ANN
    state = fold([event])
    assert state.exists and state.last_seq == 1 and list(state.members) == [ANN, BOB]


def test_a_direct_conversation_needs_exactly_two_and_an_existing_one_appends_nothing() -> None:
    for members in ([ANN], [ANN, BOB, CAT]):
        with pytest.raises(InvalidRequest) as err:
            create(participant_ids=members)
        assert "participant_ids" in err.value.details
    existing = fold([create()])
    assert create(existing) is None
    # A group id is never reused.
    with pytest.raises(Conflict):
        create(created("group"), kind="group", conversation_id="conv_1")


def test_unknown_participants_large_metadata_and_an_absent_acting_user_are_refused() -> None:
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
        lambda: edit(state, user(ANN), m1),
        lambda: react(state, user(BOB), m1),
        lambda: mark_read(state, user(BOB)),
        lambda: add(state, TENANT, CAT),
        lambda: moderate(state, TENANT, m1, "hide"),
        lambda: remove(state, TENANT, CAT),
    )
    for step in steps:
        event = step()
        assert event is not None and event.seq == state.last_seq + 1
        domain.evolve(state, event)
        seqs.append(state.last_seq)
    assert seqs == list(range(1, 9))
    flagged = report(state, user(BOB), posted(state, user(ANN)), "spam")
    assert isinstance(flagged, MessageReported) and flagged.seq == 0
    before = state.last_seq
    domain.evolve(state, flagged)
    assert state.last_seq == before


def test_folding_an_event_twice_changes_nothing() -> None:
    state = created()
    event = post(state, user(ANN), client_msg_id="c1")
    assert event is not None
    domain.evolve(state, event)
    reaction = react(state, user(BOB), event.message_id)
    assert reaction is not None
    domain.evolve(state, reaction)
    snapshot = (state.last_seq, dict(state.messages), dict(state.client_keys))
    domain.evolve(state, event)
    domain.evolve(state, reaction)
    assert (state.last_seq, dict(state.messages), dict(state.client_keys)) == snapshot


def test_the_state_notes_where_a_messages_post_and_last_edit_are_stored() -> None:
    state = created()
    event = post(state, user(ANN))
    domain.evolve(state, event)
    domain.stored(state, event, 41)
    first = edit(state, user(ANN), event.message_id, "one")
    domain.evolve(state, first)
    domain.stored(state, first, 57)
    found = state.messages[event.message_id]
    assert (found.post_position, found.edit_position) == (41, 57)
    domain.stored(state, first, 57)  # told twice (a concurrent catch-up): the same
    assert (found.post_position, found.edit_position) == (41, 57)
    domain.stored(
        state, ReadMarked(conversation_id="conv_1", seq=9, at=T0, user_id=BOB, up_to=1), 60
    )
    assert (found.post_position, found.edit_position) == (41, 57)


# -- membership ------------------------------------------------------------------------------


def test_non_participants_and_missing_conversations_are_not_found() -> None:
    state = created()
    message = posted(state, user(ANN))
    with pytest.raises(NotFound):
        post(domain.initial(), user(ANN))
    stranger = user(CAT)
    for call in (
        lambda: post(state, stranger),
        lambda: edit(state, stranger, message),
        lambda: delete(state, stranger, message),
        lambda: react(state, stranger, message),
        lambda: mark_read(state, stranger),
        lambda: domain.check_typing(state, stranger),
        lambda: report(state, stranger, message),
        lambda: moderate(state, stranger, message, "hide"),
        lambda: remove(state, stranger, stranger.user_id or ""),
    ):
        with pytest.raises(NotFound):
            call()


def test_participants_change_in_groups_only_and_by_the_tenant_though_anyone_may_leave() -> None:
    state = created()
    with pytest.raises(Forbidden):
        add(state, user(ANN), CAT)
    with pytest.raises(NotFound) as err:
        add(state, TENANT, CAT, exists=False)
    assert "user_id" in err.value.details
    added = add(state, TENANT, CAT)
    assert isinstance(added, ParticipantAdded)
    domain.evolve(state, added)
    assert add(state, TENANT, CAT) is None
    # A participant may leave, not remove others.
    with pytest.raises(Forbidden):
        remove(state, user(ANN), CAT)
    left = remove(state, user(CAT), CAT)
    assert isinstance(left, ParticipantRemoved)
    domain.evolve(state, left)
    with pytest.raises(NotFound):
        post(state, user(CAT))
    assert remove(state, TENANT, CAT) is None
    direct = created("direct", conversation_id="dm_1")
    with pytest.raises(InvalidRequest):
        add(direct, TENANT, CAT)
    with pytest.raises(InvalidRequest):
        remove(direct, TENANT, ANN)


# -- posting ---------------------------------------------------------------------------------


def test_a_user_posts_as_themselves_and_the_tenant_as_a_participant_or_the_system() -> None:
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


def test_a_banned_sender_is_refused_and_content_and_metadata_are_bounded() -> None:
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
    deleted = delete(state, user(ANN), event.message_id)
    assert deleted is not None and deleted.attachment_ids == ["att_1", "att_2"]
    plain = posted(state, user(ANN))
    moderated = moderate(state, TENANT, plain, "delete")
    assert moderated is not None and moderated.attachment_ids == []


def test_a_reply_must_name_a_message_of_the_same_conversation() -> None:
    state = created()
    with pytest.raises(InvalidRequest) as err:
        post(state, user(ANN), reply_to="msg_elsewhere")
    assert "reply_to" in err.value.details
    first = posted(state, user(ANN))
    reply = post(state, user(BOB), reply_to=first)
    assert reply is not None and reply.reply_to == first


def test_a_resent_client_msg_id_appends_nothing_and_names_the_original() -> None:
    state = created()
    original = posted(state, user(ANN), client_msg_id="c-1")
    again = posting(state, user(ANN), content="again", client_msg_id="c-1")
    assert again == Decision(Resent(original))
    assert state.message_for(ANN, "c-1") == original
    # Per sender: the same key from someone else is their own message.
    other = post(state, user(BOB), client_msg_id="c-1")
    assert other is not None
    # Even a banned sender's resend names the original it already posted.
    banned = posting(state, user(ANN), client_msg_id="c-1", banned=True)
    assert banned == Decision(Resent(original))


# -- editing and deleting --------------------------------------------------------------------


def test_only_the_author_edits_a_message_and_only_while_it_is_visible() -> None:
    state = created()
    mine = posted(state, user(ANN))
    edited = edit(state, user(ANN), mine, "new")
    assert isinstance(edited, MessageEdited) and edited.by == ANN and edited.content == "new"
    with pytest.raises(Forbidden):
        edit(state, user(BOB), mine)
    with pytest.raises(Forbidden):
        edit(state, TENANT, mine)
    with pytest.raises(NotFound):
        edit(state, user(ANN), "msg_nope")
    with pytest.raises(InvalidRequest):
        edit(state, user(ANN), mine, "")
    fold([delete(state, user(ANN), mine)], state)
    with pytest.raises(NotFound):
        edit(state, user(ANN), mine)


def test_the_author_deletes_their_own_once_and_the_tenant_any() -> None:
    state = created()
    mine = posted(state, user(ANN))
    with pytest.raises(Forbidden):
        delete(state, user(BOB), mine)
    with pytest.raises(NotFound):
        delete(state, user(ANN), "msg_nope")
    deleted = delete(state, user(ANN), mine)
    assert isinstance(deleted, MessageDeleted) and deleted.by == ANN
    domain.evolve(state, deleted)
    assert delete(state, user(ANN), mine) is None
    by_tenant = delete(state, TENANT, posted(state, user(BOB)))
    assert isinstance(by_tenant, MessageDeleted) and by_tenant.by is None


# -- reactions and reads ---------------------------------------------------------------------


def test_there_is_one_reaction_per_user_and_emoji_kept_in_the_order_added() -> None:
    state = created()
    mid = posted(state, user(ANN))
    assert react(state, user(BOB), mid, add=False) is None
    added = react(state, user(BOB), mid)
    assert isinstance(added, ReactionAdded)
    domain.evolve(state, added)
    assert react(state, user(BOB), mid) is None
    for actor, emoji in ((user(ANN), "👍"), (user(BOB), "🎉")):
        event = react(state, actor, mid, emoji)
        assert isinstance(event, ReactionAdded)
        domain.evolve(state, event)
    assert list(state.messages[mid].reactions or ()) == [("👍", BOB), ("👍", ANN), ("🎉", BOB)]
    removed = react(state, user(BOB), mid, add=False)
    assert isinstance(removed, ReactionRemoved)
    domain.evolve(state, removed)
    assert react(state, user(BOB), mid, add=False) is None
    with pytest.raises(Forbidden):
        react(state, TENANT, mid)
    with pytest.raises(InvalidRequest):
        react(state, user(BOB), mid, "x" * 33)
    fold([delete(state, user(ANN), mid)], state)
    with pytest.raises(NotFound):
        react(state, user(BOB), mid)


def test_reads_default_to_the_latest_message_and_never_move_back() -> None:
    state = created()
    assert mark_read(state, user(BOB)) is None  # nothing yet
    posted(state, user(ANN))
    second = posted(state, user(ANN))
    latest = state.last_message_seq
    fold([react(state, user(BOB), second, "x")], state)
    read = mark_read(state, user(BOB))
    assert isinstance(read, ReadMarked) and read.up_to == latest == 3
    domain.evolve(state, read)
    assert mark_read(state, user(BOB), 2) is None
    assert mark_read(state, user(BOB)) is None
    posted(state, user(ANN))
    ahead = mark_read(state, user(BOB), 10**6)
    assert isinstance(ahead, ReadMarked) and ahead.up_to == state.last_message_seq
    with pytest.raises(Forbidden):
        mark_read(state, TENANT)
    with pytest.raises(InvalidRequest):
        mark_read(state, user(ANN), -1)


def test_only_participants_may_signal_typing() -> None:
    state = created()
    assert domain.check_typing(state, user(ANN)) == ANN
    with pytest.raises(Forbidden):
        domain.check_typing(state, TENANT)


# -- reports and moderation ------------------------------------------------------------------


def test_a_participant_reports_a_visible_message_with_a_reason() -> None:
    state = created()
    mid = posted(state, user(ANN))
    flagged = report(state, user(BOB), mid, "rude")
    assert isinstance(flagged, MessageReported) and flagged.reporter_id == BOB
    assert flagged.report_id == "rep_1"
    for reason in ("", "x" * 1001):
        with pytest.raises(InvalidRequest):
            report(state, user(BOB), mid, reason)
    with pytest.raises(Forbidden):
        report(state, TENANT, mid)
    with pytest.raises(NotFound):
        report(state, user(BOB), "msg_nope")


def test_the_tenant_alone_hides_restores_and_deletes_a_message_each_once() -> None:
    state = created()
    mid = posted(state, user(ANN))
    with pytest.raises(Forbidden):
        moderate(state, user(BOB), mid, "hide")
    assert moderate(state, TENANT, mid, "restore") is None
    hidden = moderate(state, TENANT, mid, "hide")
    assert isinstance(hidden, MessageModerated) and hidden.by == "key_1"
    domain.evolve(state, hidden)
    assert moderate(state, TENANT, mid, "hide") is None
    assert not state.messages[mid].visible
    with pytest.raises(NotFound):  # hidden: gone for participants
        react(state, user(BOB), mid, "x")
    domain.evolve(state, moderate(state, TENANT, mid, "restore"))
    assert state.messages[mid].visible
    domain.evolve(state, moderate(state, TENANT, mid, "delete"))
    assert all(moderate(state, TENANT, mid, a) is None for a in ("delete", "restore", "hide"))
    with pytest.raises(NotFound):
        moderate(state, TENANT, "msg_nope", "hide")


def test_a_value_that_is_not_a_conversation_command_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        domain.decide("post", created())  # type: ignore[arg-type]


# -- the tenant's changes to a conversation, and messages' types -------------------------------


def update(state: ConversationState, actor: Actor, **patch: Any) -> Any:
    return decide(state, domain.UpdateConversation(actor=actor, now=T0, **patch))


def test_the_tenant_renames_and_merges_metadata_key_by_key() -> None:
    state = fold([create(kind="group", conversation_id="conv_1", metadata={"a": 1, "b": {"x": 1}})])
    event = update(state, TENANT, title="Booking 7", metadata={"b": {"y": 2}, "c": 3})
    assert (event.type, event.seq, event.title, event.by) == (
        "conversation.updated",
        2,
        "Booking 7",
        "key_1",
    )
    assert event.metadata == {"a": 1, "b": {"y": 2}, "c": 3}  # an object replaces the old whole
    fold([event], state)
    assert (state.title, state.metadata) == ("Booking 7", {"a": 1, "b": {"y": 2}, "c": 3})
    removed = update(state, TENANT, metadata={"a": None})
    assert removed.metadata == {"b": {"y": 2}, "c": 3} and removed.title == "Booking 7"
    fold([removed], state)
    cleared = update(state, TENANT, title=None, metadata=None)
    assert (cleared.title, cleared.metadata) == (None, {})


def test_an_update_that_changes_nothing_appends_nothing_and_widgets_cannot_update() -> None:
    state = fold([create(kind="group", conversation_id="conv_1", title="T", metadata={"a": 1})])
    assert update(state, TENANT, title="T", metadata={"a": 1}) is None
    assert update(state, TENANT) is None
    with pytest.raises(Forbidden):
        update(state, user(ANN), title="mine")
    with pytest.raises(NotFound):
        update(domain.initial(), TENANT, title="x")
    with pytest.raises(InvalidRequest):
        update(state, TENANT, metadata={"big": "x" * METADATA_MAX_BYTES})


def test_a_messages_type_is_derived_or_must_fit_what_it_carries() -> None:
    state = created()
    photo = Attachment(id="att_p", filename="p.png", content_type="image/png", size=3)
    doc = Attachment(id="att_d", filename="d.pdf", content_type="application/pdf", size=3)
    assert post(state, user(ANN)).message_type == "text"
    assert post(state, TENANT, sender_id=None).message_type == "system"
    assert post(state, TENANT, sender_id=None, message_type="system").message_type == "system"
    with_photo = {"attachment_ids": ["att_p"], "attachments": [photo]}
    assert post(state, user(ANN), **with_photo).message_type == "image"
    mixed = {"attachment_ids": ["att_p", "att_d"], "attachments": [photo, doc]}
    assert post(state, user(ANN), **mixed).message_type == "file"
    assert post(state, user(ANN), message_type="text", **mixed).message_type == "text"
    for wrong in (
        {"message_type": "system"},  # a user's message is never the system's
        {"message_type": "image"},  # no attachment
        {"message_type": "image", **mixed},  # not all images
        {"message_type": "file"},  # no attachment
    ):
        with pytest.raises(InvalidRequest):
            post(state, user(ANN), **wrong)
    with pytest.raises(InvalidRequest):
        post(state, TENANT, sender_id=None, message_type="text")


def test_a_shadowed_post_is_edited_and_deleted_by_its_sender_alone_outside_the_timeline() -> None:
    state = created(members=(ANN, BOB))
    shadowed = post(state, user(ANN), "psst", shadow=True)
    assert isinstance(shadowed, MessageShadowed) and shadowed.seq == 0
    domain.stored(state, shadowed, 7)  # seq 0: folded where the shell says it is stored
    mid = shadowed.message_id
    # Others may not touch it, nor learn that it exists; the tenant may not edit it.
    with pytest.raises(NotFound):
        edit(state, user(BOB), mid)
    with pytest.raises(NotFound):
        delete(state, user(BOB), mid)
    with pytest.raises(Forbidden):
        edit(state, TENANT, mid)
    edited = edit(state, user(ANN), mid, "psst, again")
    assert isinstance(edited, MessageShadowEdited)
    assert (edited.seq, edited.sender_id, edited.content) == (0, ANN, "psst, again")
    domain.stored(state, edited, 9)
    assert state.shadowed[mid].edit_position == 9 and state.last_seq == 1
    deleted = delete(state, user(ANN), mid)
    assert isinstance(deleted, MessageShadowDeleted) and deleted.seq == 0
    domain.stored(state, deleted, 10)
    assert delete(state, user(ANN), mid) is None and delete(state, TENANT, mid) is None
    with pytest.raises(NotFound):
        edit(state, user(ANN), mid)
    # Muted or frozen: no edit, as for any message.
    other = post(state, user(ANN), "again", shadow=True)
    domain.stored(state, other, 11)
    state.muted[ANN] = None
    with pytest.raises(Muted):
        edit(state, user(ANN), other.message_id)
