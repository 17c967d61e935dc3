"""Content sniffing and processing: types by bytes, never by name; images checked and cleaned."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from confab.errors import ConfabError, InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from confab_media import content
from confab_media.domain import Policy


def image(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB", **save: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (10, 120, 200)[: len(mode)] if mode != "P" else 3).save(out, fmt, **save)
    return out.getvalue()


def exif(**tags: object) -> bytes:
    found = Image.Exif()
    found[0x010F] = "SpyCam"
    for key, value in tags.items():
        found[int(key.removeprefix("t"))] = value
    return found.tobytes()


def zipped(*names: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in names:
            z.writestr(name, "<x/>")
    return out.getvalue()


@pytest.fixture
def put(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(data: bytes, name: str = "upload") -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (image("PNG"), "image/png"),
        (image("JPEG"), "image/jpeg"),
        (image("GIF", mode="P"), "image/gif"),
        (image("WEBP"), "image/webp"),
        (b"%PDF-1.7\n%%EOF\n", "application/pdf"),
        ("plain text, ünïcode, tabs\tand\r\nlines\n".encode(), "text/plain"),
        (b"\xef\xbb\xbfwith a BOM", "text/plain"),
        (
            zipped("[Content_Types].xml", "_rels/.rels", "word/document.xml"),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (
            zipped("[Content_Types].xml", "_rels/.rels", "xl/workbook.xml"),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        (b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x00" * 64, "audio/mpeg"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64, "video/mp4"),
        (b"OggS\x00\x02" + b"\x00" * 64, "audio/ogg"),
    ],
)
def test_types_are_named_by_content(put, data: bytes, mime: str) -> None:  # type: ignore[no-untyped-def]
    # The name says executable; the bytes decide.
    assert content.sniff(put(data, "setup.exe")).mime == mime


@pytest.mark.parametrize(
    "data",
    [
        b"MZ\x90\x00\x03" + b"\x00" * 100,  # a Windows executable
        b"\x7fELF\x02\x01\x01" + b"\x00" * 100,  # a Linux one
        zipped("payload.bin"),  # a plain archive
        bytes(range(256)) * 8,  # noise
        b"text with a NUL\x00 in it",
        b"\xff\xfe not UTF-8",
    ],
)
def test_what_is_not_an_accepted_type_is_415(put, data: bytes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnsupportedMediaType):
        content.prepare(put(data, "cute-cat.png"), Policy())


def test_size_and_emptiness_and_workspace_types(put) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest) as err:
        content.prepare(put(b""), Policy())
    assert err.value.details == {"file": "empty"}
    with pytest.raises(PayloadTooLarge):
        content.prepare(put(b"x" * 101), Policy(max_bytes=100))
    only_images = Policy(allowed=("image/*",))
    assert content.prepare(put(image("PNG")), only_images).file_type.mime == "image/png"
    with pytest.raises(UnsupportedMediaType):
        content.prepare(put(b"%PDF-1.4\n"), only_images)


HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"


def pixels(data: bytes) -> list[tuple[int, ...]]:
    with Image.open(io.BytesIO(data)) as found:
        return list(found.convert("RGBA").get_flattened_data())


def palette_image(transparent: int | None = 0) -> Image.Image:
    found = Image.new("P", (30, 20), 1)
    found.putpalette([0, 0, 0, 255, 0, 0] * 128)
    if transparent is not None:
        found.info["transparency"] = transparent
    return found


def encoded(found: Image.Image, fmt: str, **save: object) -> bytes:
    out = io.BytesIO()
    found.save(out, fmt, **save)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode", "save"),
    [
        ("PNG", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "LA", {}),
        ("JPEG", "RGB", {"comment": b"<script>alert(1)</script>"}),
        ("JPEG", "CMYK", {}),
        ("GIF", "P", {"comment": b"<script>alert(1)</script>"}),
        ("WEBP", "RGB", {"lossless": True}),
    ],
)
def test_every_image_is_encoded_afresh_and_nothing_after_it_survives(  # type: ignore[no-untyped-def]
    put, fmt: str, mode: str, save: dict[str, object]
) -> None:
    # A picture with a web page appended (and, where the format has them, a comment
    # holding a script): a browser sniffing the object would find the page.
    data = image(fmt, (640, 480), mode=mode, **save) + HTML
    prepared = content.prepare(put(data), Policy())
    assert prepared.reencoded and prepared.body is not None and prepared.path is None
    assert HTML not in prepared.body and b"<script>" not in prepared.body
    assert (prepared.width, prepared.height) == (640, 480)
    assert prepared.size == len(prepared.body)
    with Image.open(io.BytesIO(prepared.body)) as served:
        assert served.format == fmt and served.mode == mode
    if fmt in ("PNG", "GIF"):  # lossless formats: the very same picture
        assert pixels(prepared.body) == pixels(data)
    thumb = Image.open(io.BytesIO(prepared.thumbnail or b""))
    assert thumb.size == (320, 240)


def test_a_jpeg_keeps_its_quality_tables_and_a_png_its_transparency(put) -> None:  # type: ignore[no-untyped-def]
    data = image("JPEG", (200, 100), quality=60, subsampling=2)
    prepared = content.prepare(put(data), Policy())
    with (
        Image.open(io.BytesIO(data)) as original,
        Image.open(io.BytesIO(prepared.body or b"")) as served,
    ):
        assert served.quantization == original.quantization  # no loss beyond the upload's own

    for fmt in ("PNG", "GIF"):
        data = encoded(palette_image(transparent=1), fmt)  # every pixel transparent
        prepared = content.prepare(put(data + HTML), Policy())
        assert pixels(prepared.body or b"") == pixels(data)
        assert {p[3] for p in pixels(prepared.body or b"")} == {0}


def test_animations_keep_their_frames_and_timing(put) -> None:  # type: ignore[no-untyped-def]
    frames = [palette_image(None) for _ in range(3)]
    for number, frame in enumerate(frames):
        frame.putpixel((0, 0), 0 if number % 2 else 1)
    data = encoded(
        frames[0], "GIF", save_all=True, append_images=frames[1:], duration=[100, 200, 300],
        loop=0, comment=b"HIDDEN",
    )  # fmt: skip
    prepared = content.prepare(put(data + HTML), Policy())
    body = prepared.body or b""
    assert HTML not in body and b"HIDDEN" not in body
    with Image.open(io.BytesIO(body)) as served:
        assert served.n_frames == 3 and served.info["loop"] == 0
        durations = []
        for number in range(3):
            served.seek(number)
            durations.append(served.info["duration"])
        assert durations == [100, 200, 300]


def test_metadata_is_stripped_and_orientation_applied(put) -> None:  # type: ignore[no-untyped-def]
    data = image("JPEG", (80, 40), exif=exif(t274=6), comment=b"taken at home")
    assert b"SpyCam" in data
    prepared = content.prepare(put(data), Policy())
    assert prepared.reencoded and prepared.body is not None
    served = Image.open(io.BytesIO(prepared.body))
    assert served.size == (40, 80) == (prepared.width, prepared.height)
    assert len(served.getexif()) == 0 and "comment" not in served.info
    assert b"SpyCam" not in prepared.body and b"taken at home" not in prepared.body
    assert Image.open(io.BytesIO(prepared.thumbnail or b"")).size == (40, 80)

    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Ann")
    png = image("PNG", mode="RGBA", pnginfo=info)
    prepared = content.prepare(put(png), Policy())
    assert prepared.reencoded and b"Ann" not in (prepared.body or b"")
    assert prepared.thumbnail_type == "image/png"  # transparency kept


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_truncated_images_are_refused(put, fmt: str) -> None:  # type: ignore[no-untyped-def]
    data = image(fmt, (200, 200), mode="P" if fmt == "GIF" else "RGB")
    with pytest.raises(InvalidRequest) as err:
        content.prepare(put(data[: len(data) * 2 // 3]), Policy())
    assert "file" in err.value.details


def test_a_mislabelled_or_enormous_image_is_refused(put) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfabError):  # PNG magic, then nothing a decoder accepts
        content.prepare(put(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), Policy())
    with pytest.raises(InvalidRequest) as err:
        content.prepare(put(image("PNG", (400, 300))), Policy(), max_pixels=100_000)
    assert "pixels" in err.value.details["file"]


def test_a_colour_profile_is_kept_and_a_blob_posing_as_one_dropped(put) -> None:  # type: ignore[no-untyped-def]
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    posing = b"<html><script>alert(1)</script></html>" * 4
    for fmt in ("JPEG", "PNG"):
        for icc, kept in ((srgb, True), (posing, False)):
            prepared = content.prepare(put(image(fmt, icc_profile=icc)), Policy())
            with Image.open(io.BytesIO(prepared.body or b"")) as served:
                assert (served.info.get("icc_profile") == icc) is kept, (fmt, kept)
            assert b"<script>" not in (prepared.body or b"")
