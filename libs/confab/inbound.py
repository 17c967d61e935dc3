"""Bytes from outside: the rules every entry point checks before it trusts a body or a header.

One definition, used by the gateway (JSON bodies of the tenant, widget and admin
APIs), the fanout's Pusher HTTP API and the Pusher frames a socket sends:

- JSON text is UTF-8 (RFC 8259): invalid sequences and UTF-8-encoded surrogates
  are refused, and so is a body that declares any other charset.
- Arrays and objects nest at most ``MAX_DEPTH`` deep.
- Integers fit in 64 signed bits, what PostgreSQL's ``bigint`` and every JSON
  client hold; a larger one would otherwise overflow a query or a projection.
- Text holds no NUL: PostgreSQL text cannot, and one stored in an event would
  stop the read models.
- Tokens from headers (``X-Request-Id``, ``Idempotency-Key``) are printable
  ASCII and short: they are echoed, logged and stored on events.

Cost: a UTF-8 check and three byte scans, all in C, per body. The exact walk
over the decoded value runs only when a scan says the body could break a rule
(more brackets than ``MAX_DEPTH``, a run of 19 digits, an escaped NUL), so
ordinary requests never pay for it.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

MAX_DEPTH = 32
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
CHARSETS = frozenset({"utf-8", "utf8"})

# 2**63 has 19 digits: a shorter run of digits is always within range.
_LONG_NUMBER = re.compile(rb"[0-9]{19}")
_TOKEN = re.compile(r"[!-~]+")
_any = msgspec.json.Decoder()
_STRUCTURE = re.compile(rb'["\[\]{}]')
_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET = bytes(set(range(256)) - set(b"[]{}"))


class Refused(ValueError):
    """Input that breaks one of the rules above.

    ``field`` is where (``body``, or a dotted path such as ``metadata.a``);
    ``malformed`` is true when the bytes are not text at all (HTTP 400) rather than
    text with a value out of bounds (422).
    """

    def __init__(self, message: str, field: str = "body", *, malformed: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.malformed = malformed


def charset_ok(charset: str | None) -> bool:
    """A body's declared charset is acceptable: none (JSON is UTF-8) or UTF-8."""
    return charset is None or charset.strip().lower() in CHARSETS


def check_json(raw: bytes | str) -> None:
    """Raise ``Refused`` if ``raw`` breaks a rule; malformed JSON is left to the decoder."""
    if isinstance(raw, str):
        try:
            raw = raw.encode()
        except UnicodeEncodeError:
            raise Refused("The text contains an unpaired surrogate.", malformed=True) from None
    else:
        try:
            raw.decode()
        except UnicodeDecodeError as exc:
            raise Refused(
                f"The body is not valid UTF-8 (byte {exc.start} is not allowed there).",
                malformed=True,
            ) from None
    if (
        raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
        or b"\\u0000" in raw
        or _LONG_NUMBER.search(raw) is not None
    ):
        _walk(raw)


def decode(raw: bytes | str, decoder: msgspec.json.Decoder[T]) -> T:
    """``check_json``, then decode: raises ``Refused``, or msgspec's ``ValidationError``
    (the shape is wrong) or ``DecodeError`` (not JSON)."""
    check_json(raw)
    return decoder.decode(raw)


def _nesting_over(raw: bytes, limit: int) -> bool:
    """Whether arrays and objects nest deeper than ``limit``, without recursing.

    Decoding a deep body to measure it would recurse once per level (a ``RecursionError``
    at best, a crashed process if something raised the interpreter's limit). First a
    bound in C: ``limit`` passes that remove the innermost level of brackets, as if no
    string held any (so never less than the true depth), leave nothing of a body within
    it. Only if something is left are strings skipped exactly, stopping as soon as the
    depth is over.
    """
    brackets = raw.translate(_SQUARE, _NOT_BRACKET)  # only "[" and "]" left
    if b"[" * (limit + 1) not in brackets:  # else likely deep: the exact scan stops early
        for _ in range(limit):  # each pass removes the innermost level
            brackets = brackets.replace(b"[]", b"")
            if not brackets:
                return False
    depth, at = 0, 0
    while (found := _STRUCTURE.search(raw, at)) is not None:
        at = found.end()
        char = found.group()
        if char == b'"':
            at = _string_end(raw, at)
            if at < 0:
                return False  # unterminated: not JSON, which the decoder says
        elif char in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _string_end(raw: bytes, at: int) -> int:
    """Just past the quote that closes the string whose text starts at ``at``; -1 if none."""
    start = at
    while (quote := raw.find(b'"', at)) >= 0:
        before = quote - 1  # an even run of backslashes before it escapes only itself
        while before >= start and raw[before] == 0x5C:
            before -= 1
        if (quote - 1 - before) % 2 == 0:
            return quote + 1
        at = quote + 1
    return -1


def _walk(raw: bytes) -> None:
    if _nesting_over(raw, MAX_DEPTH):
        raise _too_deep()
    try:
        value = _any.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return  # not JSON, or a number no float holds: the caller's decoder says so
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise _too_deep()
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str) and "\x00" in key:
                    raise _nul(path or "body")
                stack.append((child, depth + 1, f"{path}.{key}" if path else str(key)))
        elif isinstance(item, str):
            if "\x00" in item:
                raise _nul(path or "body")
        elif type(item) is int and not INT64_MIN <= item <= INT64_MAX:
            raise Refused(
                f"The number at {path or 'the top'} is outside the 64-bit range "
                f"({INT64_MIN} to {INT64_MAX}).",
                path or "body",
            )


def _too_deep() -> Refused:
    return Refused(f"The JSON nests deeper than {MAX_DEPTH} levels of arrays and objects.")


def _nul(field: str) -> Refused:
    return Refused("Text must not contain the NUL character (\\u0000).", field)


def token_ok(value: str, max_length: int) -> bool:
    """A header token: 1 to ``max_length`` printable ASCII characters, no spaces."""
    return 0 < len(value) <= max_length and _TOKEN.fullmatch(value) is not None
