"""The first link of a message's text (``confab.links``): what a link preview is made for."""

from __future__ import annotations

import pytest

from confab.links import URL_MAX, first_link


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("see https://example.com/a?b=1.", "https://example.com/a?b=1"),
        ("(https://example.com/wiki/Foo_(bar)) and more", "https://example.com/wiki/Foo_(bar)"),
        ("first http://a.example/x, then https://b.example/", "http://a.example/x"),
        ('<a href="https://x.example/">', "https://x.example/"),
        ("HTTPS://Example.com/Path!", "HTTPS://Example.com/Path"),
        ("no scheme: www.example.com", None),
        ("javascript:alert(1) ftp://example.com/ data:text/html,hi", None),
        ("https:// nothing", None),
        ("https://" + "a" * URL_MAX, None),
    ],
)
def test_the_first_http_link_written_out(text: str, found: str | None) -> None:
    assert first_link(text) == found
