"""The notifier's rules, pure: whether, when and about what a user is told. No I/O, no
clock (``now`` comes in), no randomness.

A *pending* notification is one row per (user, conversation): the user's unread messages
there since the last notification, from ``first_seq`` to ``last_seq``, due at ``due_at``
(the first unread message's time plus the workspace's delay). When it is due, ``decide``
looks at everything that may have happened meanwhile and answers:

- ``Drop``: nothing to tell (read, every message gone, none left that the user's level
  asks for, the user erased, banned or away from the conversation, too old, or the user
  wants nothing here);
- ``Later(until)``: not now (a socket of the user is on the conversation, quiet hours,
  the user's digest interval since their last notification);
- ``Send``: one notification for all the unread messages left (a digest with a count),
  with the id ``notification_id`` gives: the same (user, conversation, last message)
  always gives the same id, so a decision taken twice (a restart, two copies) is one
  notification.

What may be in a notification: only messages that are neither deleted nor hidden, not
the recipient's own, not by an erased user; internal notes never reach here (the
engine folds only participant-visible messages).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from confab.contracts.events.notifier import Level, PreferencesSet, QuietHours
from confab.errors import InvalidRequest

NAMESPACE = uuid.UUID("6f1b8a52-4f57-4c2e-9a55-0b8d8f7d6a21")
LEVELS: tuple[Level, ...] = ("all", "mentions", "none")
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
MAX_CONVERSATION_LEVELS = 1000
MAX_DIGEST_SECONDS = 7 * 24 * 3600
# How long a user's socket on the conversation puts a notification off each time.
WATCHING_RECHECK = timedelta(seconds=30)


def notification_id(user_id: str, conversation_id: str, last_seq: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{user_id}/{conversation_id}/{last_seq}"))


# -- preferences -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preferences:
    level: Level = "all"
    conversations: dict[str, Level] = field(default_factory=dict)
    quiet_hours: QuietHours | None = None
    time_zone: str = "UTC"
    digest_seconds: int = 0
    email: bool = True
    push: bool = True
    language: str | None = None

    def level_in(self, conversation_id: str) -> Level:
        return self.conversations.get(conversation_id, self.level)


DEFAULT_PREFERENCES = Preferences()


def preferences_of(event: PreferencesSet | None) -> Preferences:
    if event is None:
        return DEFAULT_PREFERENCES
    return Preferences(
        level=event.level,
        conversations=dict(event.conversations),
        quiet_hours=event.quiet_hours,
        time_zone=event.time_zone,
        digest_seconds=event.digest_seconds,
        email=event.email,
        push=event.push,
        language=event.language,
    )


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidRequest(
            f"{name!r} is not a known time zone.",
            {"time_zone": "an IANA time zone name, e.g. Europe/Berlin"},
        ) from None


def check(prefs: Preferences) -> Preferences:
    """``prefs`` if it is valid; InvalidRequest naming the field otherwise."""
    zone(prefs.time_zone)
    if prefs.quiet_hours is not None:
        for name in ("start", "end"):
            if not _HHMM.match(getattr(prefs.quiet_hours, name)):
                raise InvalidRequest(
                    "Quiet hours are two times of day, HH:MM.", {f"quiet_hours.{name}": "HH:MM"}
                )
    if not 0 <= prefs.digest_seconds <= MAX_DIGEST_SECONDS:
        raise InvalidRequest(
            "The digest interval is 0 to 604800 seconds.", {"digest_seconds": "0..604800"}
        )
    if len(prefs.conversations) > MAX_CONVERSATION_LEVELS:
        raise InvalidRequest(
            f"At most {MAX_CONVERSATION_LEVELS} conversations have their own level.",
            {"conversations": "too many"},
        )
    return prefs


def patched(prefs: Preferences, changes: dict[str, object]) -> Preferences:
    """``prefs`` with ``changes`` (fields given in a patch; a conversation level ``None``
    goes back to the user's level), checked."""
    conversations = dict(prefs.conversations)
    given = changes.pop("conversations", None)
    if isinstance(given, dict):
        for cid, level in given.items():
            if level is None:
                conversations.pop(cid, None)
            else:
                conversations[cid] = level  # type: ignore[assignment]
    return check(replace(prefs, conversations=conversations, **changes))  # type: ignore[arg-type]


def quiet_until(prefs: Preferences, now: datetime) -> datetime | None:
    """When the user's quiet hours end, if ``now`` is inside them; None otherwise."""
    hours = prefs.quiet_hours
    if hours is None or hours.start == hours.end:
        return None
    tz = zone(prefs.time_zone)
    local = now.astimezone(tz)
    start, end = _time(hours.start), _time(hours.end)
    t = local.time()
    inside = (start <= t < end) if start < end else (t >= start or t < end)
    if not inside:
        return None
    day = local.date() if (start < end or t < end) else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=tz)


def _time(text: str) -> time:
    hour, minute = text.split(":")
    return time(int(hour), int(minute))


# -- deciding ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageRef:
    seq: int
    message_id: str
    sender_id: str | None
    at: datetime
    gone: bool = False  # deleted, or hidden by a moderator
    sender_erased: bool = False
    mentions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Candidate:
    """A due pending notification and everything its decision depends on."""

    workspace_id: str
    user_id: str
    conversation_id: str
    first_seq: int
    last_seq: int
    messages: tuple[MessageRef, ...]  # the conversation's messages first_seq..last_seq
    read_up_to: int
    member: bool
    erased: bool
    banned: bool
    prefs: Preferences
    watching: bool  # a socket of the user is subscribed to the conversation
    last_notified_at: datetime | None  # the user's last notification (any conversation)
    max_age: timedelta


@dataclass(frozen=True, slots=True)
class Send:
    notification_id: str
    messages: tuple[MessageRef, ...]
    mentioned: bool

    @property
    def count(self) -> int:
        return len(self.messages)


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str


@dataclass(frozen=True, slots=True)
class Later:
    until: datetime
    reason: str


Decision = Send | Drop | Later


def decide(c: Candidate, now: datetime) -> Decision:
    if c.erased or c.banned or not c.member:
        return Drop("recipient")
    level = c.prefs.level_in(c.conversation_id)
    if level == "none":
        return Drop("preferences")
    unread = [
        m
        for m in c.messages
        if m.seq > c.read_up_to and not m.gone and not m.sender_erased and m.sender_id != c.user_id
    ]
    if level == "mentions":
        unread = [m for m in unread if c.user_id in m.mentions]
    if not unread:
        return Drop("nothing unread")
    if now - unread[-1].at > c.max_age:
        return Drop("too old")
    if c.watching:
        return Later(now + WATCHING_RECHECK, "watching")
    quiet = quiet_until(c.prefs, now)
    if quiet is not None:
        return Later(quiet, "quiet hours")
    if c.last_notified_at is not None and c.prefs.digest_seconds:
        next_at = c.last_notified_at + timedelta(seconds=c.prefs.digest_seconds)
        if next_at > now:
            return Later(next_at, "digest interval")
    mentioned = any(c.user_id in m.mentions for m in unread)
    return Send(notification_id(c.user_id, c.conversation_id, c.last_seq), tuple(unread), mentioned)
