"""Command handling of conversations over the in-memory log: the shell and the decider.

No NATS, no PostgreSQL: the conversation decider runs in ``Aggregates`` on a
``MemoryLog``, with the look-ups a handler would make passed in the commands.
Two ``Aggregates`` on one log are two messaging processes with their own
caches. The same paths against the real backends are in
``test_messaging_service.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from confab import aggregate
from confab.aggregate import Aggregates, Executed
from confab.contracts.events.messaging import (
    Attachment,
    ConversationCreated,
    MessagePosted,
    subject,
)
from confab.contracts.messaging import Actor
from confab.conversation import message_object
from confab.errors import InvalidRequest
from confab.ids import new_id
from confab.memlog import MemoryLog
from confab_messaging import domain
from confab_messaging.commands import message_as_now
from confab_messaging.domain import DECIDER, ConversationState, Resent

T0 = datetime(2025, 1, 1, tzinfo=UTC)
WS = "ws_1"
ANN, BOB = "usr_ann", "usr_bob"
TENANT = Actor(workspace_id=WS, key_id="key_1")
CONVERSATION = "conv_1"
SUBJECT = subject(WS, CONVERSATION)

Conversations = Aggregates[domain.Command, ConversationState]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregate, "BACKOFF_SECONDS", 0.0)


def user(user_id: str) -> Actor:
    return Actor(workspace_id=WS, user_id=user_id)


async def run(
    process: Conversations, command: domain.Command, msg_id: str = ""
) -> Executed[ConversationState]:
    actor = command.actor.user_id or command.actor.key_id or ""
    return await process.execute(
        SUBJECT, command, msg_id=msg_id or new_id("evt"), workspace=WS, actor=actor
    )


_ids = iter(range(10**6))


def post(
    sender: str, content: str = "hi", client_msg_id: str | None = None, **kw: Any
) -> domain.PostMessage:
    return domain.PostMessage(
        actor=user(sender),
        now=T0,
        sender_id=sender,
        content=content,
        message_id=f"msg_{next(_ids)}",
        client_msg_id=client_msg_id,
        **kw,
    )


def key(sender: str, client_msg_id: str) -> str:
    return domain.client_msg_key(CONVERSATION, sender, client_msg_id)


async def conversation(log: MemoryLog) -> Conversations:
    process = Aggregates(log, DECIDER)
    create = domain.CreateConversation(
        actor=TENANT,
        now=T0,
        conversation_id=CONVERSATION,
        kind="group",
        participant_ids=[ANN, BOB],
    )
    await run(process, create)
    return process


async def test_posts_from_two_processes_take_gap_free_seqs_in_the_order_stored() -> None:
    log = MemoryLog()
    first = await conversation(log)
    second = Aggregates(log, DECIDER)
    for i in range(6):
        await run((first, second)[i % 2], post((ANN, BOB)[i % 2], f"m{i}"))
    posted = [e for e in log.events(SUBJECT) if isinstance(e, MessagePosted)]
    assert [(e.seq, e.content) for e in posted] == [(i + 2, f"m{i}") for i in range(6)]
    assert log.appends > log.last_seq  # the processes did lose races, and decided again


async def test_a_direct_conversation_created_by_two_processes_is_created_once() -> None:
    log = MemoryLog()
    first, second = Aggregates(log, DECIDER), Aggregates(log, DECIDER)
    await second.load(SUBJECT)  # second has seen the empty subject
    create = domain.CreateConversation(
        actor=TENANT,
        now=T0,
        conversation_id=CONVERSATION,
        kind="direct",
        participant_ids=[ANN, BOB],
    )
    made = await run(first, create)
    again = await run(second, create)
    assert isinstance(made.event, ConversationCreated) and again.events == ()
    assert again.version == made.version and len(log.events(SUBJECT)) == 1


async def test_a_resend_by_a_process_with_a_stale_cache_is_recognised_by_its_message_id() -> None:
    log = MemoryLog()
    first = await conversation(log)
    second = Aggregates(log, DECIDER)
    await second.load(SUBJECT)  # before the post
    original = await run(first, post(ANN, "once", "c-1"), key(ANN, "c-1"))
    resend = post(ANN, "once", "c-1")
    again = await run(second, resend, key(ANN, "c-1"))
    assert again.duplicate and again.positions == original.positions
    assert again.state.message_for(ANN, "c-1") == original.event.message_id  # type: ignore[union-attr]
    assert resend.message_id not in again.state.messages
    assert sum(isinstance(e, MessagePosted) for e in log.events(SUBJECT)) == 1


async def test_past_the_duplicate_window_the_state_recognises_a_resend() -> None:
    now = [0.0]
    log = MemoryLog(clock=lambda: now[0])
    first = await conversation(log)
    second = Aggregates(log, DECIDER)
    await second.load(SUBJECT)
    original = await run(first, post(ANN, "once", "c-1"), key(ANN, "c-1"))
    now[0] = 3600.0  # the log no longer knows the message id
    again = await run(second, post(ANN, "once", "c-1"), key(ANN, "c-1"))
    assert again.events == () and not again.duplicate
    assert again.result == Resent(original.event.message_id)  # type: ignore[union-attr]
    assert sum(isinstance(e, MessagePosted) for e in log.events(SUBJECT)) == 1


async def test_an_attachment_claimed_by_a_process_with_a_stale_cache_stays_with_one_message() -> (
    None
):
    log = MemoryLog()
    first = await conversation(log)
    second = Aggregates(log, DECIDER)
    await second.load(SUBJECT)
    found = Attachment(id="att_1", filename="a.png", content_type="image/png", size=1)
    claim = {"attachment_ids": ["att_1"], "attachments": [found]}
    await run(first, post(ANN, **claim))
    with pytest.raises(InvalidRequest) as refused:
        await run(second, post(ANN, **claim))
    assert "already attached" in refused.value.details["attachment_ids"]


async def test_a_resent_or_edited_message_is_read_back_from_the_log_as_it_is_now() -> None:
    log = MemoryLog()
    process = await conversation(log)
    for i in range(5):  # the message is not the last thing in the log
        await run(process, post(BOB, f"before {i}"))
    posted = await run(process, post(ANN, "first words", "c-1", metadata={"k": 1}))
    message_id = posted.event.message_id  # type: ignore[union-attr]
    for emoji, who in (("🎉", BOB), ("👍", ANN), ("👍", BOB)):
        react = domain.React(actor=user(who), now=T0, message_id=message_id, emoji=emoji, add=True)
        await run(process, react)
    edit = domain.EditMessage(actor=user(ANN), now=T0, message_id=message_id, content="second")
    edited = await run(process, edit)
    for i in range(3):
        await run(process, post(BOB, f"after {i}"))

    state, _ = await process.load(SUBJECT)
    reads = log.reads
    now = await message_as_now(process, SUBJECT, state, message_id)
    assert log.reads == reads + 2  # the post and the edit, however long the conversation
    shown = message_object(now, ANN, None)
    assert (shown.id, shown.content, shown.metadata, shown.client_msg_id) == (
        message_id,
        "second",
        {"k": 1},
        "c-1",
    )
    assert shown.edited_at == T0 and not shown.deleted
    assert [(e, r.count, r.me) for e, r in shown.reactions.items()] == [
        ("🎉", 1, False),
        ("👍", 2, True),
    ]
    assert now.stream_seq == posted.positions[0] and shown.seq == posted.event.seq  # type: ignore[union-attr]

    # Given the edit just decided, only the post is read.
    reads = log.reads
    again = await message_as_now(
        process, SUBJECT, edited.state, message_id, edit=(edited.positions[0], edit_event(edited))
    )
    assert log.reads == reads + 1 and again.content == "second"

    delete = domain.DeleteMessage(actor=user(ANN), now=T0, message_id=message_id)
    deleted = await run(process, delete)
    gone = message_object(
        await message_as_now(process, SUBJECT, deleted.state, message_id), ANN, None
    )
    assert (gone.deleted, gone.content, gone.attachments) == (True, "", [])


def edit_event(executed: Executed[ConversationState]) -> Any:
    event = executed.event
    assert event is not None
    return event
