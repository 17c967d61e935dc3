"""Mention entities (``confab_messaging.mentions``): checked against the text and the
participants; carried through an edit only where the edit did not touch them."""

from __future__ import annotations

import pytest

from confab.contracts.events.messaging import Mention
from confab.errors import InvalidRequest
from confab_messaging.mentions import carried, checked

BOB, CAT = "usr_bob", "usr_cat"


def at(text: str, name: str, user: str) -> Mention:
    start = len(text[: text.index("@" + name)])
    return Mention(user_id=user, start=start, end=start + 1 + len(name))


def test_offsets_are_code_points_and_come_back_in_text_order() -> None:
    text = "🎉👍🏽 @Cat and @Bob"
    given = [at(text, "Bob", BOB), at(text, "Cat", CAT)]
    found = checked(text, given, {BOB, CAT})
    assert [(m.user_id, text[m.start : m.end]) for m in found] == [(CAT, "@Cat"), (BOB, "@Bob")]


@pytest.mark.parametrize(
    ("mention", "why"),
    [
        (Mention(user_id=BOB, start=3, end=99), "not inside"),
        (Mention(user_id=BOB, start=4, end=4), "not inside"),
        (Mention(user_id=BOB, start=2, end=7), "does not start with @"),
        (Mention(user_id="usr_eve", start=3, end=7), "not a participant"),
    ],
)
def test_what_does_not_fit_is_refused(mention: Mention, why: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        checked("hi @Bob", [mention], {BOB})
    assert why in str(refused.value.details)


def test_overlaps_and_too_many_are_refused() -> None:
    one = Mention(user_id=BOB, start=3, end=7)
    with pytest.raises(InvalidRequest, match="do not fit"):
        checked("hi @Bob", [one, Mention(user_id=BOB, start=5, end=7)], {BOB})
    with pytest.raises(InvalidRequest):
        checked("hi @Bob", [one] * 51, {BOB})


def test_an_edit_carries_the_mentions_it_did_not_touch() -> None:
    old = "hi @Bob, ask @Cat"
    mentions = [at(old, "Bob", BOB), at(old, "Cat", CAT)]
    new = "hello there @Bob, please ask @Cat"  # the start changed: Bob's span with it
    kept = carried(old, new, mentions)
    assert [(m.user_id, new[m.start : m.end]) for m in kept] == [(CAT, "@Cat")]
    same_start = "hi @Bob, do ask @Cat"
    kept = carried(old, same_start, mentions)
    assert [(m.user_id, same_start[m.start : m.end]) for m in kept] == [
        (BOB, "@Bob"),
        (CAT, "@Cat"),
    ]
    assert carried(old, "nothing", mentions) == []
