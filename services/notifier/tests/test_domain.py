"""The notifier's rules, pure: a clock we drive, no backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from confab.contracts.events.notifier import QuietHours, Template
from confab.errors import InvalidRequest
from confab_notifier import domain, templates
from confab_notifier.domain import Candidate, Drop, Later, MessageRef, Preferences, Send

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def msg(seq: int, sender: str | None = "bob", **kw: object) -> MessageRef:
    return MessageRef(seq=seq, message_id=f"m{seq}", sender_id=sender, at=T0, **kw)  # type: ignore[arg-type]


def candidate(*messages: MessageRef, **kw: object) -> Candidate:
    base: dict[str, object] = {
        "workspace_id": "ws",
        "user_id": "alice",
        "conversation_id": "c1",
        "first_seq": messages[0].seq if messages else 1,
        "last_seq": messages[-1].seq if messages else 1,
        "messages": messages,
        "read_up_to": 0,
        "member": True,
        "erased": False,
        "banned": False,
        "prefs": Preferences(),
        "watching": False,
        "last_notified_at": None,
        "max_age": timedelta(days=1),
    }
    base.update(kw)
    return Candidate(**base)  # type: ignore[arg-type]


def test_five_unread_messages_are_one_digest_with_a_stable_id() -> None:
    c = candidate(*(msg(i) for i in range(1, 6)))
    decision = domain.decide(c, T0 + timedelta(seconds=60))
    assert isinstance(decision, Send) and decision.count == 5
    again = domain.decide(c, T0 + timedelta(seconds=90))
    assert isinstance(again, Send) and again.notification_id == decision.notification_id
    assert decision.notification_id != domain.notification_id("alice", "c1", 4)


def test_read_gone_own_and_erased_authors_are_left_out() -> None:
    c = candidate(
        msg(1),
        msg(2, gone=True),
        msg(3, sender="alice"),
        msg(4, sender_erased=True),
        msg(5),
        read_up_to=1,
    )
    decision = domain.decide(c, T0)
    assert isinstance(decision, Send)
    assert [m.seq for m in decision.messages] == [5]
    assert domain.decide(candidate(msg(1), msg(2), read_up_to=2), T0) == Drop("nothing unread")
    assert domain.decide(candidate(msg(1, gone=True)), T0) == Drop("nothing unread")


@pytest.mark.parametrize("change", [{"erased": True}, {"banned": True}, {"member": False}])
def test_recipients_who_may_not_be_told_are_dropped(change: dict[str, bool]) -> None:
    assert isinstance(domain.decide(candidate(msg(1), **change), T0), Drop)


def test_levels_all_mentions_none_per_conversation() -> None:
    mention = msg(2, mentions=("alice",))
    mentions_only = Preferences(conversations={"c1": "mentions"})
    d = domain.decide(candidate(msg(1), mention, prefs=mentions_only), T0)
    assert isinstance(d, Send) and [m.seq for m in d.messages] == [2] and d.mentioned
    assert isinstance(domain.decide(candidate(msg(1), prefs=mentions_only), T0), Drop)
    muted = Preferences(level="all", conversations={"c1": "none"})
    assert domain.decide(candidate(msg(1), prefs=muted), T0) == Drop("preferences")
    other = Preferences(level="none", conversations={"c1": "all"})
    assert isinstance(domain.decide(candidate(msg(1), prefs=other), T0), Send)


def test_a_watching_user_is_asked_again_later() -> None:
    d = domain.decide(candidate(msg(1), watching=True), T0)
    assert isinstance(d, Later) and d.until > T0


def test_quiet_hours_in_the_users_time_zone_span_midnight() -> None:
    prefs = Preferences(quiet_hours=QuietHours(start="22:00", end="07:00"), time_zone="Asia/Tokyo")
    # 12:00 UTC is 21:00 in Tokyo: not quiet; 14:00 UTC is 23:00: quiet until 07:00 local.
    assert isinstance(domain.decide(candidate(msg(1), prefs=prefs), T0), Send)
    later = domain.decide(candidate(msg(1), prefs=prefs), T0 + timedelta(hours=2))
    assert isinstance(later, Later)
    assert later.until == datetime(2026, 3, 2, 22, 0, tzinfo=UTC)  # 07:00 on the 3rd in Tokyo
    early = domain.quiet_until(prefs, datetime(2026, 3, 2, 20, 0, tzinfo=UTC))  # 05:00 local
    assert early == datetime(2026, 3, 2, 22, 0, tzinfo=UTC)


def test_digest_interval_and_age() -> None:
    prefs = Preferences(digest_seconds=600)
    d = domain.decide(
        candidate(msg(1), prefs=prefs, last_notified_at=T0 - timedelta(seconds=60)), T0
    )
    assert isinstance(d, Later) and d.until == T0 + timedelta(seconds=540)
    assert domain.decide(candidate(msg(1)), T0 + timedelta(days=2)) == Drop("too old")


def test_preferences_are_checked() -> None:
    with pytest.raises(InvalidRequest):
        domain.patched(Preferences(), {"time_zone": "Mars/Olympus"})
    with pytest.raises(InvalidRequest):
        domain.patched(Preferences(), {"quiet_hours": QuietHours(start="25:00", end="07:00")})
    p = domain.patched(Preferences(conversations={"a": "none"}), {"conversations": {"a": None}})
    assert p.conversations == {}


def test_templates_escape_html_and_the_sandbox_holds() -> None:
    context = {
        "recipient": "<b>Sam</b>",
        "sender_name": "Acme",
        "conversation": "",
        "count": 1,
        "messages": [{"author": "Eve", "text": "<script>alert(1)</script>"}],
        "mentioned": False,
        "link": "",
        "unsubscribe_url": "https://x.invalid/u",
    }
    for lang in templates.LANGUAGES:
        r = templates.render(templates.DEFAULTS[lang], context)
        assert "<script>" not in r.html and "&lt;script&gt;" in r.html
        assert "<script>" in r.text and "\n" not in r.subject
    hostile = Template(subject="{{ ''.__class__.__mro__ }}", text="x", html="x")
    with pytest.raises(InvalidRequest):
        templates.render(hostile, context)
    with pytest.raises(InvalidRequest):
        templates.check_template(Template(subject="{% if %}", text="x", html="x"))
    assert templates.language_of("pt-BR", "en") == "pt"
    assert templates.language_of("xx", "de") == "de"


async def test_a_tenants_template_cannot_loop_or_allocate_without_end() -> None:
    renderer = templates.Renderer(seconds=1.0)
    context = {"messages": [{"author": "a", "text": "x" * 500}], "count": 1}
    try:
        fine = Template(subject="{{ count }} new", text="{{ messages[0].author }}", html="<p/>")
        assert (await renderer.render(fine, context)).subject == "1 new"
        loops = "{% for m in messages %}{% for a in m.text %}{% for b in m.text %}" * 1
        bomb = Template(
            subject="x",
            text=loops + "{% for c in m.text %}{% for d in m.text %}.{% endfor %}{% endfor %}"
            "{% endfor %}{% endfor %}{% endfor %}",
            html="x",
        )
        with pytest.raises(InvalidRequest, match="longer than"):
            await renderer.render(bomb, context)
        huge = Template(subject="x", text="{{ 'x' * 2000000000 }}", html="x")
        with pytest.raises(InvalidRequest):
            await renderer.render(huge, context)
        assert (await renderer.render(fine, context)).text == "a"  # a fresh worker
    finally:
        await renderer.close()
