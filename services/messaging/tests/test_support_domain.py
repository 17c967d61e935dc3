"""The support decider (``confab_messaging.support_domain``), as a pure function."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from confab.contracts.events.messaging import ConversationCreated, MessagePosted
from confab.contracts.messaging import Actor
from confab.errors import Forbidden, InvalidRequest, NotFound
from confab_messaging import support_domain
from confab_messaging.support_domain import DECIDER

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
OPENED = [
    ConversationCreated(
        conversation_id="conv_1",
        seq=1,
        at=T0,
        kind="support",
        participant_ids=["vis"],
        created_by="vis",
    ),
    MessagePosted(
        conversation_id="conv_1", seq=2, at=T0, message_id="msg_1", sender_id="vis", content="?"
    ),
]


def test_the_decider_refuses_widget_users_and_says_nothing_twice() -> None:
    state = DECIDER.fold(OPENED)
    tenant = Actor(workspace_id="ws_1", key_id="key_1")
    visitor = Actor(workspace_id="ws_1", user_id="vis")
    stranger = Actor(workspace_id="ws_1", user_id="someone")
    with pytest.raises(Forbidden):
        support_domain.decide(support_domain.SetTags(actor=visitor, now=T0, tags=["x"]), state)
    with pytest.raises(NotFound):  # not theirs: not even there
        support_domain.decide(support_domain.SetTags(actor=stranger, now=T0, tags=["x"]), state)
    decision = support_domain.decide(
        support_domain.SetTags(actor=tenant, now=T0, tags=["VIP", " vip "]), state
    )
    (event,) = decision.events
    assert event.tags == ["vip"] and event.seq == 0 and event.staff_seq == 1  # type: ignore[attr-defined]
    state = DECIDER.evolve(state, event)
    again = support_domain.SetTags(actor=tenant, now=T0, tags=["vip"])
    assert support_domain.decide(again, state).events == ()
    with pytest.raises(InvalidRequest):
        support_domain.decide(
            support_domain.SetStatus(actor=tenant, now=T0, status="snoozed", snoozed_until=T0),
            state,
        )
    # The participants' seq is untouched by staff events: the next post takes 3.
    assert state.next_seq == 3
