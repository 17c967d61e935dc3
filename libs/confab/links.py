"""The first link of a message's text: what a link preview is made for.

Plain ``http``/``https`` URLs written out in the text (``https://…`` or ``http://…``),
as the widget's linkifier shows them: the run of characters up to white space or
``<>"``, without trailing punctuation that ends a sentence (``.,;:!?'``) or an unmatched
closing bracket. Nothing is guessed from bare domain names. Pure.
"""

from __future__ import annotations

import re

URL_MAX = 2048

_URL = re.compile(r"""\bhttps?://[^\s<>"\x00-\x1f\x7f]+""", re.IGNORECASE)
_TRAILING = ".,;:!?'"
_PAIRS = {")": "(", "]": "[", "}": "{"}


def first_link(text: str) -> str | None:
    """The first http(s) URL in ``text`` (at most ``URL_MAX`` characters), or None."""
    for found in _URL.finditer(text):
        url = _trim(found.group(0))
        if len(url) <= URL_MAX and "://" in url and url.split("://", 1)[1]:
            return url
    return None


def _trim(url: str) -> str:
    while url and (
        url[-1] in _TRAILING
        or (url[-1] in _PAIRS and url.count(url[-1]) > url.count(_PAIRS[url[-1]]))
    ):
        url = url[:-1]
    return url
