"""What a file is, judged by its bytes, and what is served of it.

``sniff`` names the type from magic bytes (the ``filetype`` library: a
well-kept, dependency-free table of signatures, including the ZIP layouts of
office documents), or recognises plain UTF-8 text; the client's file name
and content type play no part. ``prepare`` checks the whole file against its
type and the workspace's policy, and for images decodes every pixel (a
truncated or damaged image is refused), measures it, makes a thumbnail, and
re-encodes it in its own format, upright (EXIF orientation applied).

Every image is re-encoded, so what is served is Pillow's encoding of the
pixels and nothing else of the upload: no metadata (EXIF, XMP, IPTC,
comments, PNG text), no private chunks, no bytes after the image's end (a PNG
with an HTML page appended loses the page). Only such images are served
inline; every other file is served as a download (``domain.served_inline``).

Synchronous and CPU-bound: the handler runs it in a worker thread.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import filetype
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from confab.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from confab_media.domain import ALIASES, IMAGE_FORMATS, TYPES, FileType, Policy

Image.MAX_IMAGE_PIXELS = None  # checked here against the configured limit, before decoding

HEAD_BYTES = 8192
READ_BYTES = 1024 * 1024
# C0 controls other than tab, line feed, vertical tab, form feed, carriage return and
# escape, and DEL: text does not contain them, binary files nearly always do.
_NOT_TEXT = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
# What an encoder needs from an image's ``info`` to draw the same picture; the rest
# (EXIF, XMP, IPTC, comments, text chunks, unknown extensions) is not carried over.
_DRAWING_KEYS = ("transparency", "duration", "loop", "background")
_ORIENTATION = 0x0112
# zlib level for re-encoded PNGs: on a 3840x2160 photo-like picture level 3 took a tenth
# of the time of Pillow's default 6 for 7 % more bytes (the upload waits for it).
PNG_LEVEL = 3


@dataclass(frozen=True)
class Prepared:
    """What will be stored: the object served, its type and measures, and a thumbnail.

    Images are always ``body`` (re-encoded); other files are ``path`` (as uploaded).
    """

    file_type: FileType
    size: int
    sha256: str
    path: Path | None = None  # serve this file as uploaded ...
    body: bytes | None = None  # ... or these re-encoded bytes
    width: int | None = None
    height: int | None = None
    thumbnail: bytes | None = None
    thumbnail_type: str | None = None
    thumbnail_ext: str | None = None
    reencoded: bool = False  # an image re-encoded from its pixels: safe to show inline


def damaged(what: str = "image") -> InvalidRequest:
    return InvalidRequest(
        f"The {what} is damaged or truncated.", {"file": f"not a complete, readable {what}"}
    )


def sniff(path: Path) -> FileType:
    """The file's type by content; UnsupportedMediaType if it is none media knows."""
    with path.open("rb") as file:
        head = file.read(HEAD_BYTES)
    kind = filetype.guess(head)
    if kind is not None:
        mime = ALIASES.get(kind.mime, kind.mime)
        found = TYPES.get(mime)
        if found is None:
            raise UnsupportedMediaType(
                f"Files of type {mime} are not accepted.", {"file": f"{mime} is not accepted"}
            )
        return found
    if is_text(path):
        return TYPES["text/plain"]
    raise UnsupportedMediaType(
        "The file's type could not be recognised from its content.",
        {"file": "unrecognised content"},
    )


def is_text(path: Path) -> bool:
    """Valid UTF-8 (a BOM allowed) without the control characters binary files contain."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    with path.open("rb") as file:
        while chunk := file.read(READ_BYTES):
            if _NOT_TEXT.search(chunk):
                return False
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                return False
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def prepare(
    path: Path,
    policy: Policy,
    *,
    max_pixels: int = 50_000_000,
    thumbnail_size: int = 320,
) -> Prepared:
    """Check ``path`` by content against ``policy``; raise the API error that fits, if any."""
    size = path.stat().st_size
    if size == 0:
        raise InvalidRequest("The file is empty.", {"file": "empty"})
    if size > policy.max_bytes:
        raise PayloadTooLarge(
            f"The file is larger than {policy.max_bytes} bytes.",
            {"file": f"at most {policy.max_bytes} bytes"},
        )
    file_type = sniff(path)
    if not policy.allows(file_type.mime):
        raise UnsupportedMediaType(
            f"Files of type {file_type.mime} are not accepted in this workspace.",
            {"file": f"{file_type.mime} is not accepted"},
        )
    if file_type.kind == "image":
        return _prepare_image(path, file_type, max_pixels, thumbnail_size)
    return Prepared(file_type=file_type, size=size, sha256=sha256_of(path), path=path)


def _prepare_image(path: Path, file_type: FileType, max_pixels: int, thumb: int) -> Prepared:
    try:
        with Image.open(path) as image:
            if image.format != IMAGE_FORMATS[file_type.mime]:
                raise damaged()
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidRequest(
                    "The image has too many pixels.",
                    {"file": f"at most {max_pixels} pixels (width times height)"},
                )
            if file_type.mime == "image/png":
                image.verify()  # chunk checksums
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            for frame in range(frames):
                image.seek(frame)
                image.load()
            image.seek(0)
            thumbnail, thumbnail_type, thumbnail_ext = _thumbnail(image, thumb)
            body, width, height = _reencode(image, file_type)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise damaged() from exc
    return Prepared(
        file_type=file_type,
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        body=body,
        width=width,
        height=height,
        thumbnail=thumbnail,
        thumbnail_type=thumbnail_type,
        thumbnail_ext=thumbnail_ext,
        reencoded=True,
    )


def _reencode(image: Image.Image, file_type: FileType) -> tuple[bytes, int, int]:
    """The image encoded afresh in its own format, upright, with nothing of the upload's
    bytes but what draws the picture: its pixels, frames and timing, transparency, and a
    colour profile that parses as one."""
    icc = _colour_profile(image)
    out = io.BytesIO()
    fmt = IMAGE_FORMATS[file_type.mime]
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        # Animations keep their frames and timing (each frame's own are read from the
        # file as the encoder walks them); orientation tags are rare here.
        image.info = _drawing_info(image.info)
        params: dict[str, object] = {"save_all": True}
        if "loop" in image.info:  # absent: played once
            params["loop"] = image.info["loop"]
        if fmt == "WEBP":
            params["quality"] = 90
        image.save(out, fmt, **params)
        return out.getvalue(), image.width, image.height
    params = {"icc_profile": icc} if icc else {}
    upright = image
    if image.getexif().get(_ORIENTATION, 1) != 1:
        upright = ImageOps.exif_transpose(image) or image.copy()
    info = _drawing_info(image.info)
    if fmt == "JPEG":
        if upright is image and image.mode in ("RGB", "L", "CMYK"):
            # The original's quantisation and subsampling: no further loss of quality.
            try:
                image.info = info
                image.save(out, "JPEG", quality="keep", subsampling="keep", optimize=True,
                           **params)  # fmt: skip
                return out.getvalue(), image.width, image.height
            except (ValueError, OSError):
                out = io.BytesIO()
        upright = upright.copy() if upright is image else upright
        if upright.mode not in ("RGB", "L", "CMYK"):
            upright = upright.convert("RGB")
        params |= {"quality": 92, "optimize": True}
    elif fmt == "WEBP":
        params |= {"quality": 90}
    elif fmt == "PNG":
        params |= {"compress_level": PNG_LEVEL}
    upright.info = info  # nothing else carried over implicitly (comments, text chunks)
    upright.save(out, fmt, **params)
    return out.getvalue(), upright.width, upright.height


def _drawing_info(info: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in info.items() if k in _DRAWING_KEYS}


def _colour_profile(image: Image.Image) -> bytes | None:
    """The image's ICC profile if it is one (a blob that does not parse is dropped)."""
    icc = image.info.get("icc_profile")
    if not isinstance(icc, bytes) or not icc:
        return None
    try:
        ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return None
    return icc


def _thumbnail(image: Image.Image, size: int) -> tuple[bytes, str, str]:
    """At most ``size`` by ``size``, upright: JPEG, or PNG where there is transparency."""
    upright = ImageOps.exif_transpose(image) or image.copy()
    upright.thumbnail((size, size))
    transparent = upright.mode in ("RGBA", "LA", "PA") or (
        upright.mode == "P" and "transparency" in upright.info
    )
    out = io.BytesIO()
    if transparent:
        upright.convert("RGBA").save(out, "PNG", optimize=True)
        return out.getvalue(), "image/png", "png"
    upright.convert("RGB").save(out, "JPEG", quality=80, optimize=True)
    return out.getvalue(), "image/jpeg", "jpg"
