"""Presence as the notifier reads it from the fanout nodes' keys: a user watches a
conversation while a node whose heartbeat lives says so."""

from __future__ import annotations

import base64

from confab_notifier.presence import Presence


def enc(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def key(channel: str, user: str, node: str) -> str:
    return f"w.app1.{enc(channel)}.{enc(user)}.{node}"


def test_watching_needs_a_live_node_and_a_conversation_channel() -> None:
    p = Presence(js=None)  # type: ignore[arg-type]
    p.apply(key("private-conversation.c1", "u1", "11"), True)
    assert not p.watching("u1", "c1")  # node 11 has no heartbeat yet
    p.apply("n.11", True)
    assert p.watching("u1", "c1") and not p.watching("u2", "c1") and not p.watching("u1", "c2")
    p.apply(key("presence-conversation.c1", "u1", "12"), True)
    p.apply("n.12", True)
    p.apply(key("private-conversation.c1", "u1", "11"), False)
    assert p.watching("u1", "c1")  # still on node 12
    p.apply("n.12", False)  # node 12 died: its keys stop counting
    assert not p.watching("u1", "c1")
    p.apply(key("private-user.u1", "u1", "11"), True)  # not a conversation
    p.apply(key("private-conversation.c9", "u9", "11")[:-3], True)  # malformed
    p.apply("w.app1.!!!.x.11", True)
    assert not p.watching("u1", "u1") and p.watchers.keys() <= {("u1", "c1")}
