"""Mention entities (``confab_messaging.mentions``): checked against the text and the
participants; carried through an edit only where the edit did not touch them."""

from __future__ import annotations

import pytest

from confab.contracts.events.messaging import Mention
from confab.contracts.events.moderation import AutomodRule
from confab.errors import InvalidRequest
from confab_messaging.automod import MASK, Compiled, mask
from confab_messaging.mentions import after_masking, carried, checked

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


def test_masking_moves_mentions_to_their_text_and_drops_those_it_masked() -> None:
    rules = Compiled.build(
        1,
        [
            AutomodRule(id="phones", kind="phone", action="mask"),
            AutomodRule(id="emails", kind="email", action="mask"),
            AutomodRule(id="deals", kind="word", action="mask", words=["deal"]),
        ],
        dry_run=False,
    )
    sent = "📞 555 123 4567 @Bob, write bob@example.com or @Cat: deal, deal"
    given = [at(sent, "Bob", BOB), at(sent, "Cat", CAT), at(sent, "example", CAT)]
    verdict = rules.apply(sent)
    assert verdict.content == "📞 *** @Bob, write *** or @Cat: ***, ***"
    kept = after_masking(given, verdict.masked, len(MASK))
    # Each kept mention names the same text in what is stored; the masked one is gone.
    assert [(m.user_id, verdict.content[m.start : m.end]) for m in kept] == [
        (BOB, "@Bob"),
        (CAT, "@Cat"),
    ]
    assert checked(verdict.content, kept, {BOB, CAT}) == kept
    # Nothing masked: nothing moves.
    assert after_masking(given[:2], (), len(MASK)) == given[:2]


def test_overlapping_masks_are_one_and_empty_matches_mask_nothing() -> None:
    assert mask("abcdef", [(1, 3), (2, 5), (5, 5)]) == ("a***f", ((1, 5),))
    assert mask("abcdef", [(0, 0)]) == ("abcdef", ())
    assert mask("abab", [(0, 2), (2, 4)]) == ("******", ((0, 2), (2, 4)))
