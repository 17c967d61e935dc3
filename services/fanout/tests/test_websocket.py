"""The frame reader alone (``confab_fanout.websocket``), fed bytes as a network would cut
them: the whole Autobahn suite and the fuzz module test it through a real socket."""

from __future__ import annotations

from confab.bench.fanout import client_frame
from confab_fanout.websocket import WebSocket

LIMIT = 16 * 1024


class Transport:
    def is_closing(self) -> bool:
        return False


class Reader(WebSocket):
    __slots__ = ("texts",)

    def __init__(self) -> None:
        super().__init__(Transport(), LIMIT, 1.0)  # type: ignore[arg-type]
        self.texts: list[str] = []

    def on_text(self, text: str) -> None:
        self.texts.append(text)


def test_a_frame_trickled_a_byte_at_a_time_is_read_once_it_is_whole() -> None:
    reader = Reader()
    text = "é" * (LIMIT // 2)  # the largest message: 16,384 bytes of UTF-8
    frame = client_frame(text.encode())
    head = 2 + 2 + 4  # 16-bit length, then the mask key
    for i in range(head):
        reader.data_received(frame[i : i + 1])
    # Its length is known: what comes next is only appended until the frame is whole.
    assert reader.need == head + LIMIT and isinstance(reader.pending, bytearray)
    for i in range(head, len(frame)):
        reader.data_received(frame[i : i + 1])
    assert reader.texts == [text] and reader.pending is None


def test_frames_cut_anywhere_come_out_whole_and_in_order() -> None:
    frames = b"".join(client_frame(f'{{"n":{n}}}'.encode() * (n * 40 + 1)) for n in range(6))
    for cut in (1, 3, 7, 100, 4096):
        reader = Reader()
        for i in range(0, len(frames), cut):
            reader.data_received(frames[i : i + cut])
        assert reader.texts == [f'{{"n":{n}}}' * (n * 40 + 1) for n in range(6)], cut
        assert reader.pending is None
