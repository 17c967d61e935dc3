"""The pure parts of reading streams and showing progress (no backend)."""

import io
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from confab.cli.progress import ProgressBar
from confab.streamread import _parse_header_lines, parse_since, position

HEADER_BLOCKS = [
    b"Nats-Msg-Id: evt_1\r\nConfab-Event: message.posted\r\nConfab-Schema: 2\r\n\r\n",
    b"A:b\r\nSpaced :  value with spaces  \r\nEmpty:\r\n\r\n",
    "Confab-Actor: usr_1\r\nX-Name: Zoë 👋\r\n\r\n".encode(),
    b"Bad Name: x\r\nno colon here\r\n: no name\r\nOk: 1\r\n\r\n",
    b"Dup: 1\r\nDup: 2\r\n\r\n",
]


@pytest.mark.parametrize("raw", HEADER_BLOCKS)
def test_the_fast_header_parser_agrees_with_nats_py(raw: bytes) -> None:
    assert _parse_header_lines(raw) == Client._parse_header_lines(raw)


def test_position_reads_both_forms_of_the_reply_subject() -> None:
    v1 = Msg(None, reply="$JS.ACK.CONVERSATIONS.c1.1.42.7.1700000000123456789.5")  # type: ignore[arg-type]
    assert position(v1) == (42, 5, 1700000000123456789)
    v2 = Msg(None, reply="$JS.ACK._.acc.CONVERSATIONS.c1.1.43.8.1700000000000000000.0.x")  # type: ignore[arg-type]
    assert position(v2) == (43, 0, 1700000000000000000)
    with pytest.raises(ValueError):
        position(Msg(None, reply="_INBOX.abc"))  # type: ignore[arg-type]


def test_since_takes_durations_and_times() -> None:
    now = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_since("10m", now) == now - timedelta(minutes=10)
    assert parse_since("1.5h", now) == now - timedelta(minutes=90)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2025-04-30T08:00:00Z") == datetime(2025, 4, 30, 8, tzinfo=UTC)
    assert parse_since("2025-04-30 08:00") == datetime(2025, 4, 30, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="10m"):
        parse_since("yesterday")


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    out = io.StringIO()
    bar = ProgressBar("messaging", out, tty=True, interval=0)
    bar.add_total(1000)
    bar.advance(250)
    bar.finish()
    shown = out.getvalue()
    assert "\r" in shown and "[#######---------------------]  25%" in shown
    assert "250/1,000 events" in shown and "ETA" in shown and shown.endswith("\n")

    plain = io.StringIO()
    lines = ProgressBar("messaging", plain, tty=False, interval=0)
    lines.add_total(10)
    lines.advance(10)
    lines.finish()
    assert "\r" not in plain.getvalue() and "\x1b" not in plain.getvalue()
    assert plain.getvalue().splitlines()[-1].startswith("messaging: 100%  10/10 events")
