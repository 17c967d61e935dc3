"""Automatic moderation: a workspace's rules, compiled once, applied to a post before it is
accepted.

Rules (``automod.rules_changed``, the workspace's settings subject) are compiled
once per version of the workspace's settings (``Compiled``) and cached by the
handler; applying them to a message is pure and cheap: one linear-time scan per
rule.

Regular expressions are RE2 (``google-re2``): matching takes time linear in the
text, whatever the pattern (no backtracking, no back-references, no
look-around), so no tenant-given pattern can make a send slow; a pattern RE2
cannot compile, or whose program needs more than ``MAX_PROGRAM_BYTES``, is
refused when the rules are set. Limits: ``MAX_RULES`` rules, patterns of
``MAX_PATTERN`` characters, ``MAX_WORDS`` words of ``MAX_WORD`` characters a
rule, and messages are at most 10,000 characters already.

Words match whole (ASCII word boundaries, case-insensitive). The detectors
(``phone``, ``email``, ``url``) are built-in RE2 patterns aimed at the usual
ways people pass contact details to take a deal off-platform.

The verdict, in order of strength: any ``block`` refuses the post; otherwise
``mask`` rules replace their matches with ``MASK`` and ``flag`` rules add a
system report, ``shadow`` rules let only the sender see it (``message.shadowed``).
In a dry run every rule that matches only flags.

Masking is one pass over the text as sent: the non-empty matches of every ``mask``
rule, overlapping ones merged, each replaced by one ``MASK``. The verdict names the
spans it replaced (``Verdict.masked``, in the sent text's code points), so what was
computed against the sent text (mention entities: ``mentions.after_masking``) is moved
to where that text is now, or dropped where it was masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import re2

from confab.contracts.events.messaging import AutomodHit
from confab.contracts.events.moderation import AutomodRule
from confab.errors import InvalidRequest

MAX_RULES = 50
MAX_PATTERN = 500
MAX_WORDS = 200
MAX_WORD = 100
MAX_PROGRAM_BYTES = 1 << 20  # RE2's memory budget for one pattern
MASK = "***"

DETECTORS = {
    # +49 30 1234567, (555) 123-4567, 555.123.4567: seven to fifteen digits with separators.
    "phone": r"\+?\(?\d(?:[\s.\-()]{0,3}\d){6,14}",
    "email": r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}",
    "url": (
        r"(?i)(?:\b(?:https?://|www\.)[^\s<>]+|\b[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\."
        r"(?:com|net|org|io|co|me|app|info|biz|ly|gg|xyz|dev|de|fr|es|uk|us)\b(?:/[^\s<>]*)?)"
    ),
}


def _options() -> re2.Options:
    options = re2.Options()
    options.max_mem = MAX_PROGRAM_BYTES
    options.log_errors = False
    return options


def _word_pattern(words: list[str]) -> str:
    alternatives = "|".join(re2.escape(w) for w in sorted(set(words), key=len, reverse=True))
    return rf"(?i)\b(?:{alternatives})\b"


def pattern_of(rule: AutomodRule) -> str:
    if rule.kind == "word":
        return _word_pattern(rule.words)
    if rule.kind == "regex":
        return rule.pattern or ""
    return DETECTORS[rule.kind]


def check_rules(rules: list[AutomodRule]) -> None:
    """Refuse (422) rules that are too many, too big, malformed or not RE2."""
    if len(rules) > MAX_RULES:
        raise InvalidRequest("Too many rules.", {"rules": f"at most {MAX_RULES}"})
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        where = f"rules[{index}]"
        if rule.id in seen:
            raise InvalidRequest("Two rules have the same id.", {where: "ids must be unique"})
        seen.add(rule.id)
        if rule.kind == "word":
            if not rule.words or len(rule.words) > MAX_WORDS:
                raise InvalidRequest("A word rule needs words.", {where: f"1 to {MAX_WORDS} words"})
            if any(not w.strip() or len(w) > MAX_WORD for w in rule.words):
                raise InvalidRequest(
                    "A word is empty or too long.", {where: f"words of 1 to {MAX_WORD} characters"}
                )
        elif rule.kind == "regex":
            if not rule.pattern or len(rule.pattern) > MAX_PATTERN:
                raise InvalidRequest(
                    "A regex rule needs a pattern.", {where: f"a pattern of 1 to {MAX_PATTERN}"}
                )
        elif rule.words or rule.pattern:
            raise InvalidRequest(
                "A detector takes no words or pattern.", {where: f"{rule.kind} is built in"}
            )
        try:
            re2.compile(pattern_of(rule), _options())
        except re2.error as exc:
            raise InvalidRequest(
                "A pattern is not a regular expression we accept (RE2 syntax, no "
                "back-references or look-around, bounded size).",
                {where: _reason(exc)},
            ) from None


def _reason(exc: Exception) -> str:
    """RE2's reason as text (its errors carry bytes: ``b'invalid escape sequence: \\1'``)."""
    reason = exc.args[0] if exc.args else ""
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return str(reason)[:200]


@dataclass(frozen=True, slots=True)
class _Rule:
    id: str
    action: str
    regex: re2._Regexp


@dataclass(frozen=True, slots=True)
class Verdict:
    content: str
    hits: list[AutomodHit] = field(default_factory=list)
    blocked: bool = False
    flagged: bool = False
    shadow: bool = False
    # The spans of the sent text replaced by ``MASK`` (start, end), in order, disjoint.
    masked: tuple[tuple[int, int], ...] = ()

    @property
    def clean(self) -> bool:
        return not self.hits


@dataclass(frozen=True)
class Compiled:
    """A workspace's rules, compiled (once per settings version)."""

    version: int
    rules: tuple[_Rule, ...]
    dry_run: bool = False

    @classmethod
    def build(cls, version: int, rules: list[AutomodRule], dry_run: bool) -> Compiled:
        options = _options()
        return cls(
            version,
            tuple(_Rule(r.id, r.action, re2.compile(pattern_of(r), options)) for r in rules),
            dry_run,
        )

    def apply(self, content: str) -> Verdict:
        """What the rules do to ``content``."""
        if not self.rules:
            return Verdict(content)
        hits = [rule for rule in self.rules if rule.regex.search(content) is not None]
        if not hits:
            return Verdict(content)
        if self.dry_run:
            return Verdict(
                content, [AutomodHit(rule_id=r.id, action="flag") for r in hits], flagged=True
            )
        found = [AutomodHit(rule_id=r.id, action=r.action) for r in hits]  # type: ignore[arg-type]
        actions = {r.action for r in hits}
        if "block" in actions:
            return Verdict(content, found, blocked=True)
        spans = [m.span() for r in hits if r.action == "mask" for m in r.regex.finditer(content)]
        content, masked = mask(content, spans)
        return Verdict(
            content, found, flagged="flag" in actions, shadow="shadow" in actions, masked=masked
        )


NO_RULES = Compiled(0, ())


def mask(content: str, spans: list[tuple[int, int]]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """``content`` with each non-empty span replaced by ``MASK`` (overlapping spans merged
    into one), and the spans replaced, in order."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[0] < s[1]):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    if not merged:
        return content, ()
    parts, at = [], 0
    for start, end in merged:
        parts += [content[at:start], MASK]
        at = end
    parts.append(content[at:])
    return "".join(parts), tuple(merged)
