"""A corpus of awkward and hostile image files, all derived from one real face image.

Tests of any stage that reads images (decoding, ingest, the CLI) can write the corpus into a
temporary folder and check each file against its expected outcome::

    from tests.bad_inputs import write_bad_input_corpus, OK, UNREADABLE, TOO_LARGE
    expected = write_bad_input_corpus(tmp_path, skimage.data.astronaut())
    for name, outcome in expected.items(): ...

Outcomes: ``"ok"`` files decode under the default ``max_pixels`` and still show the face upright;
``"unreadable"`` files must raise ``ImageUnreadable``; ``"too_large"`` ones ``ImageTooLarge``.
Generation takes well under 2 s (the 6000x4000 JPEG dominates).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

OK = "ok"
UNREADABLE = "unreadable"
TOO_LARGE = "too_large"

EXPECTED: dict[str, str] = {
    "grey.png": OK,  # mode L
    "rgba.png": OK,  # mode RGBA, transparent margin (composited on white by the loader)
    "grey16.png": OK,  # mode I;16, samples = grey * 257 (full 16-bit range)
    "cmyk.jpg": OK,  # mode CMYK JPEG
    "palette.png": OK,  # mode P, 256-colour adaptive palette
    "exif_rot6.jpg": OK,  # pixels stored rotated, EXIF orientation 6 makes them upright
    "exif_rot8.jpg": OK,  # same with orientation 8
    "webp_named.jpg": OK,  # WebP content behind a .jpg name
    "huge_6000x4000.jpg": OK,  # 24 MP, under the 50 MP default; face pasted at HUGE_FACE_OFFSET
    "café photo ü.jpg": OK,  # spaces and non-ASCII in the name
    "empty.jpg": UNREADABLE,  # zero bytes
    "truncated.jpg": UNREADABLE,  # first half of a valid JPEG
    "random_bytes.jpg": UNREADABLE,  # 4 KiB of noise
    "text.png": UNREADABLE,  # a text file with an image name
    "bomb_30000x30000.png": TOO_LARGE,  # valid 1-bit PNG, 900 MP, ~110 KB on disk
}
"""File name -> expected outcome, for every file :func:`write_bad_input_corpus` writes."""

HUGE_SIZE = (6000, 4000)  # (width, height) of huge_6000x4000.jpg
HUGE_FACE_SCALE = 4  # the face image is enlarged this many times before pasting
HUGE_FACE_OFFSET = (3000, 1200)  # (x, y) of the pasted face image's top-left corner
BOMB_SIDE = 30_000  # width and height claimed (and really encoded) by the bomb PNG
RGBA_MARGIN = 40  # fully transparent border of rgba.png, in pixels


def write_bad_input_corpus(folder: Path, face_rgb: np.ndarray) -> dict[str, str]:
    """Write every file of :data:`EXPECTED` into ``folder``, derived from ``face_rgb``.

    Args:
        folder: an existing, writable folder (a pytest ``tmp_path``).
        face_rgb: ``(H, W, 3) uint8`` RGB image showing one upright face, at least
            ``2 * RGBA_MARGIN + 1`` pixels on each side and no larger than
            ``HUGE_SIZE / HUGE_FACE_SCALE`` (``skimage.data.astronaut()`` fits).

    Returns:
        ``{file name: "ok" | "unreadable" | "too_large"}`` (a copy of :data:`EXPECTED`).
    """
    folder = Path(folder)
    face = np.ascontiguousarray(face_rgb, dtype=np.uint8)
    image = Image.fromarray(face, "RGB")
    grey = np.asarray(image.convert("L"))

    Image.fromarray(grey, "L").save(folder / "grey.png")
    _write_rgba(folder / "rgba.png", face)
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "grey16.png")
    image.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(folder / "palette.png")
    _write_exif_rotated(folder / "exif_rot6.jpg", face, orientation=6)
    _write_exif_rotated(folder / "exif_rot8.jpg", face, orientation=8)
    image.save(folder / "webp_named.jpg", format="WEBP", quality=90)
    _write_huge(folder / "huge_6000x4000.jpg", face)
    image.save(folder / "café photo ü.jpg", quality=92)

    (folder / "empty.jpg").write_bytes(b"")
    jpeg = _jpeg_bytes(face, quality=92)
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    noise = np.random.default_rng(20240601).integers(0, 256, 4096, dtype=np.uint8)
    (folder / "random_bytes.jpg").write_bytes(noise.tobytes())
    (folder / "text.png").write_text("Custody record 1234\nThis is not an image.\n", encoding="utf-8")
    (folder / "bomb_30000x30000.png").write_bytes(png_bomb(BOMB_SIDE))
    return dict(EXPECTED)


def _jpeg_bytes(pixels: np.ndarray, quality: int, **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=quality, **save_args)
    return buffer.getvalue()


def _write_rgba(path: Path, face: np.ndarray) -> None:
    """RGBA PNG: opaque face, fully transparent ``RGBA_MARGIN`` border whose hidden colour is black."""
    alpha = np.zeros(face.shape[:2], dtype=np.uint8)
    alpha[RGBA_MARGIN:-RGBA_MARGIN, RGBA_MARGIN:-RGBA_MARGIN] = 255
    rgb = face.copy()
    rgb[alpha == 0] = 0  # what "drop alpha" would show: a black frame
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)


def _write_exif_rotated(path: Path, face: np.ndarray, orientation: int) -> None:
    """JPEG whose stored pixels are turned so that applying EXIF ``orientation`` makes them upright.

    Orientation 6 means "rotate 90 degrees clockwise to display", so the stored pixels are the
    upright face turned 90 degrees counter-clockwise (``np.rot90(k=1)``); 8 is the reverse.
    """
    turns = {6: 1, 8: -1}[orientation]
    stored = np.ascontiguousarray(np.rot90(face, k=turns))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.write_bytes(_jpeg_bytes(stored, quality=95, exif=exif.tobytes()))


def _write_huge(path: Path, face: np.ndarray) -> None:
    """24 MP JPEG: mid-grey canvas with the face enlarged ``HUGE_FACE_SCALE`` times pasted in."""
    width, height = HUGE_SIZE
    canvas = np.full((height, width, 3), 128, dtype=np.uint8)
    big = cv2.resize(face, None, fx=HUGE_FACE_SCALE, fy=HUGE_FACE_SCALE, interpolation=cv2.INTER_CUBIC)
    x, y = HUGE_FACE_OFFSET
    canvas[y : y + big.shape[0], x : x + big.shape[1]] = big
    path.write_bytes(_jpeg_bytes(canvas, quality=85))


def png_bomb(side: int) -> bytes:
    """A valid ``side`` x ``side`` 1-bit black PNG that deflates to almost nothing.

    Its IDAT really decodes to ``side * side`` pixels (900 MP for 30000), so a loader that does
    not check the header first would allocate about 1 GB. The zlib stream repeats one
    full-flushed compressed block of zero rows instead of deflating 112 MB, which keeps this fast.
    """
    row_bytes = 1 + (side + 7) // 8  # filter byte + packed bits
    rows_per_block = 1000
    if side % rows_per_block:
        raise ValueError(f"side must be a multiple of {rows_per_block}")
    block = bytes(row_bytes * rows_per_block)
    compressor = zlib.compressobj(9)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    final_block = compressor.flush()[:-4]  # empty final block; its adler32 covers two blocks only
    checksum = 1
    for _ in range(side // rows_per_block):
        checksum = zlib.adler32(block, checksum)
    stream = first + repeat * (side // rows_per_block - 1) + final_block + struct.pack(">I", checksum)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
