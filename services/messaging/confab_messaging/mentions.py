"""Mentions: structured entities in a message, checked against its text and its people.

A client gives each mention as ``{user_id, start, end}``: ``content[start:end]``, in
Unicode code points (Python's ``str`` indexes), is the ``@name`` that names the user.
Nobody parses the text again: the offsets are stored with the message and every reader
renders from them. The write side checks, on every post and every edit:

- at most ``MAX_MENTIONS``; each span inside the text, non-empty, at most
  ``SPAN_MAX`` code points, starting with ``@``; spans do not overlap;
- each user is a participant of the conversation now.

An edit either gives the mentions of its new text (checked the same way) or leaves
them out: then the mentions whose span the edit did not touch (inside the unchanged
start or end of the text) are carried over, shifted to where that text now is, and
kept only if their user is still a participant; the others are dropped. Nothing
guesses a mention from the text.

Automatic moderation may mask parts of the text before it is stored: the client's
offsets are for the text as sent, so ``after_masking`` moves each mention to where its
text is in the masked one, and drops a mention whose span was (partly) masked. The
stored mentions always fit the stored text.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from confab.contracts.events.messaging import Mention
from confab.contracts.messaging import MAX_MENTIONS
from confab.errors import InvalidRequest

SPAN_MAX = 101  # "@" and a name of up to 100 code points


def _refuse(why: str) -> InvalidRequest:
    return InvalidRequest("The mentions do not fit the text.", {"mentions": why})


def checked(content: str, mentions: Sequence[Mention], members: Collection[str]) -> list[Mention]:
    """``mentions`` in text order, or InvalidRequest saying what does not fit."""
    if len(mentions) > MAX_MENTIONS:
        raise _refuse(f"at most {MAX_MENTIONS} mentions")
    ordered = sorted(mentions, key=lambda m: (m.start, m.end))
    end_before = 0
    for m in ordered:
        if not 0 <= m.start < m.end <= len(content):
            raise _refuse(f"{m.start}..{m.end} is not inside the text (0..{len(content)})")
        if m.end - m.start > SPAN_MAX:
            raise _refuse(f"{m.start}..{m.end} is longer than {SPAN_MAX} characters")
        if content[m.start] != "@":
            raise _refuse(f"the text at {m.start} does not start with @")
        if m.start < end_before:
            raise _refuse(f"{m.start}..{m.end} overlaps another mention")
        end_before = m.end
        if m.user_id not in members:
            raise InvalidRequest(
                "Only participants can be mentioned.",
                {"mentions": f"{m.user_id} is not a participant of this conversation"},
            )
    return ordered


def carried(old: str, new: str, mentions: Sequence[Mention]) -> list[Mention]:
    """The mentions of ``old`` that an edit to ``new`` did not touch, where they are now
    (the decider then drops those of users no longer taking part)."""
    if not mentions:
        return []
    limit = min(len(old), len(new))
    prefix = 0
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    shift = len(new) - len(old)
    kept = []
    for m in mentions:
        if m.end <= prefix:
            kept.append(m)
        elif m.start >= len(old) - suffix:
            kept.append(Mention(user_id=m.user_id, start=m.start + shift, end=m.end + shift))
    return kept


def after_masking(
    mentions: Sequence[Mention], masked: Sequence[tuple[int, int]], mask_length: int
) -> list[Mention]:
    """``mentions`` of a text in which the spans ``masked`` (in order, disjoint) were each
    replaced by ``mask_length`` code points: shifted to where their text is now; those
    overlapping a masked span dropped."""
    if not masked:
        return list(mentions)
    kept = []
    for m in mentions:
        shift = 0
        for start, end in masked:
            if end <= m.start:
                shift += mask_length - (end - start)
            elif start < m.end:
                break  # its text was masked
            else:
                kept.append(Mention(user_id=m.user_id, start=m.start + shift, end=m.end + shift))
                break
        else:
            kept.append(Mention(user_id=m.user_id, start=m.start + shift, end=m.end + shift))
    return kept


def from_input(given: Sequence[object]) -> list[Mention]:
    """Request mentions (``MentionInput``) as the stored kind."""
    return [
        Mention(user_id=m.user_id, start=m.start, end=m.end)  # type: ignore[attr-defined]
        for m in given
    ]
