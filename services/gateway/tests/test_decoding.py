"""The gateway's one JSON decoding point at the edges of ``confab.inbound``'s rules.

The end-to-end answers are in ``tests/test_hostile_input.py``; here, the exact
limits: what is one past them is refused, what is at them passes.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec
import pytest

from confab import inbound
from confab.errors import BadRequest, InvalidRequest
from confab_gateway.api import decode_json

ANY: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize(
    "raw",
    [
        nested(inbound.MAX_DEPTH),
        b'{"a":' + nested(inbound.MAX_DEPTH - 1) + b"}",
        str(2**63 - 1).encode(),
        str(-(2**63)).encode(),
        b'"' + b"9" * 40 + b'"',  # digits in a string are text
        b'"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["',  # brackets in a string are text
        '{"é": "日本", "emoji": "👍"}'.encode(),
        b'"\\u00e9"',
    ],
)
def test_at_the_limits_it_decodes(raw: bytes) -> None:
    assert decode_json(raw, ANY) == msgspec.json.decode(raw)


@pytest.mark.parametrize(
    ("raw", "error", "field"),
    [
        (nested(inbound.MAX_DEPTH + 1), InvalidRequest, "body"),
        (b'{"a":' + nested(inbound.MAX_DEPTH) + b"}", InvalidRequest, "body"),
        (nested(100_000), InvalidRequest, "body"),
        (str(2**63).encode(), InvalidRequest, "body"),
        (b'{"a":[1,' + str(-(2**63) - 1).encode() + b"]}", InvalidRequest, "a.1"),
        (b'{"k\\u0000":1}', InvalidRequest, "body"),
        (b'{"a":{"b":"x\\u0000"}}', InvalidRequest, "a.b"),
        (b'"\xff"', BadRequest, None),
        (b'"\xed\xa0\x80"', BadRequest, None),  # a surrogate, encoded in UTF-8
        (b'"\xc0\xaf"', BadRequest, None),  # an overlong encoding of "/"
        (b'"\\ud800"', BadRequest, None),  # a lone surrogate, escaped
        (b'{"a":1e400}', InvalidRequest, None),  # no float holds it
    ],
)
def test_one_past_the_limits_it_is_a_4xx(raw: bytes, error: type, field: str | None) -> None:
    with pytest.raises(error) as refused:
        decode_json(raw, ANY)
    assert type(refused.value) is error
    if field is not None:
        assert field in refused.value.details, refused.value.details


def test_a_typed_body_keeps_its_field_errors() -> None:
    class Body(msgspec.Struct):
        n: int

    with pytest.raises(InvalidRequest) as refused:
        decode_json(b'{"n":"x"}', msgspec.json.Decoder(Body))
    assert refused.value.details == {"n": "Expected int, got str"}


def test_depth_is_measured_without_recursing_whatever_the_interpreters_limit() -> None:
    """A test tool may raise the recursion limit (Hypothesis does): decoding a deep body to
    measure it would then crash the process instead of raising. It is never decoded."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(500_000)
    try:
        with pytest.raises(InvalidRequest):
            decode_json(nested(400_000), ANY)
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize(
    ("raw", "deep"),
    [
        (b'["' + b"[" * 100 + b'"]', False),  # brackets in a string are text
        (b'["\\\\"' + b",[]" * 100 + b"]", False),  # an escaped backslash ends no string
        (b'["\\"[", ' + nested(40) + b"]", True),  # an escaped quote ends no string
        (b'["\\\\", ' + nested(32) + b"]", True),
        (b'["\\\\", ' + nested(31) + b"]", False),
        (b"[" * 20 + b'{"a":' * 20 + b"1" + b"}" * 20 + b"]" * 20, True),
        (b"[" + b"[[[[[[[[[[1]]]]]]]]]]," * 1000 + b"[]]", False),
    ],
)
def test_depth_counts_structure_not_text(raw: bytes, deep: bool) -> None:
    assert inbound._nesting_over(raw, inbound.MAX_DEPTH) is deep
