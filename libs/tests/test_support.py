"""The staff fold (``confab.support``), as a pure function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from confab.contracts.events.messaging import (
    ConversationCreated,
    MessagePosted,
    NoteAdded,
    ParticipantMerged,
    SupportAssigned,
    SupportStatusChanged,
)
from confab.support import SupportView, evolve, status_now

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CID = "conv_1"


def created() -> ConversationCreated:
    return ConversationCreated(
        conversation_id=CID, seq=1, at=T0, kind="support", participant_ids=["vis"], created_by="vis"
    )


def posted(seq: int, sender: str, minutes: int) -> MessagePosted:
    return MessagePosted(
        conversation_id=CID,
        seq=seq,
        at=T0 + timedelta(minutes=minutes),
        message_id=f"msg_{seq}",
        sender_id=sender,
        content="hi",
    )


def test_the_staff_fold() -> None:
    view = SupportView(CID, "ws_1")
    assert evolve(view, created(), 1) is not None and view.visitor_id == "vis"
    evolve(view, posted(2, "vis", 1), 2)
    assert view.first_response_at is None  # the visitor's own message is no response
    evolve(view, posted(3, "agent", 5), 3)
    assert view.first_response_at == T0 + timedelta(minutes=5)
    evolve(view, posted(4, "agent", 9), 4)
    assert view.first_response_at == T0 + timedelta(minutes=5)  # the first stays

    until = T0 + timedelta(hours=1)
    snooze = SupportStatusChanged(
        conversation_id=CID, seq=0, at=T0, staff_seq=1, status="snoozed", snoozed_until=until
    )
    assert evolve(view, snooze, 5) is not None
    assert status_now(view, until - timedelta(seconds=1)) == "snoozed"
    assert status_now(view, until) == "open"  # it woke by itself
    closed = SupportStatusChanged(
        conversation_id=CID, seq=0, at=until, staff_seq=2, status="closed"
    )
    evolve(view, closed, 6)
    assert view.resolved_at == until and view.snoozed_until is None
    # A redelivered staff event changes nothing (staff_seq), nor an older one.
    assert evolve(view, snooze, 5) is None and view.status == "closed"
    reopened = SupportStatusChanged(
        conversation_id=CID, seq=0, at=until, staff_seq=3, status="open"
    )
    evolve(view, reopened, 7)
    assert view.resolved_at is None and view.status == "open"
    note = NoteAdded(
        conversation_id=CID, seq=0, at=T0, staff_seq=4, note_id="n", author_id="agent", content="x"
    )
    change = evolve(view, note, 8)
    assert change is not None and change.note is note
    merged = ParticipantMerged(conversation_id=CID, seq=5, at=T0, user_id="vis", into_id="vera")
    evolve(view, merged, 9)
    assert view.visitor_id == "vera"


def test_not_a_support_conversation_folds_to_nothing() -> None:
    view = SupportView(CID)
    group = ConversationCreated(
        conversation_id=CID, seq=1, at=T0, kind="group", participant_ids=["a"]
    )
    assert evolve(view, group, 1) is None and not view.exists
    assign = SupportAssigned(conversation_id=CID, seq=0, at=T0, staff_seq=1, assignee_id="a")
    assert evolve(view, assign, 2) is None
