"""Decode image files into RGB pixel arrays, safely and reproducibly.

Every image that enters facematch (custody photos, crime-scene stills, probe images) goes through
:func:`load_image` or :func:`load_image_bytes`. They read the bytes once, hash those bytes (the
content identity used for idempotent ingest), check the pixel count from the header *before*
decoding (so a decompression bomb never allocates its pixels), decode with Pillow, apply the EXIF
orientation and convert whatever mode the file holds to ``(H, W, 3) uint8`` RGB. What was done is
recorded in :attr:`LoadedImage.notes` so a reviewer can see, for instance, that a ``.jpg`` was
really a WebP or that a 16-bit scan was scaled down.

Pillow's own global state is left alone: ``Image.MAX_IMAGE_PIXELS`` and
``ImageFile.LOAD_TRUNCATED_IMAGES`` are never written, so truncated files raise instead of being
padded with grey.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from facematch.errors import ImageTooLarge, ImageUnreadable, InvalidArgument
from facematch.settings import Settings

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "LoadedImage",
    "downscale_for_detection",
    "load_image",
    "load_image_bytes",
    "sha256_file",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = Settings.max_pixels
"""Largest accepted width x height (pixels). 50 MP covers any camera still; above it we refuse."""

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "PPM")
"""Pillow format names we try. Restricting the list keeps rarely-used (and rarely-fuzzed) decoders
out of reach of untrusted files. JPEG includes MPO, the multi-picture JPEG many phones write, which
is reported as ``"JPEG"``."""

_HASH_CHUNK = 1 << 20  # bytes read per step by sha256_file

# Exception types Pillow's decoders are known to raise on corrupt input (UnidentifiedImageError
# is an OSError). Anything else is a bug and is allowed to propagate.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError,
                  KeyError, ZeroDivisionError)

# EXIF orientation tag value -> note describing the transform applied to reach the upright view.
_ORIENTATION_NOTES = {
    2: "exif-mirrored",
    3: "exif-rotated-180",
    4: "exif-flipped",
    5: "exif-transposed",
    6: "exif-rotated-90",  # rotated 90 degrees clockwise for display
    7: "exif-transversed",
    8: "exif-rotated-270",  # rotated 90 degrees counter-clockwise for display
}
_EXIF_ORIENTATION_TAG = 0x0112

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded image, ready for face detection.

    Attributes:
        pixels: ``(H, W, 3) uint8`` RGB, C-contiguous, EXIF orientation already applied.
            The array is writable but callers should treat it as read-only (it may be shared).
        sha256: hex SHA-256 of the file's bytes (not of the pixels): the content identity
            used to make ingest idempotent.
        width: ``W`` in pixels, after EXIF rotation.
        height: ``H`` in pixels, after EXIF rotation.
        format: the real format detected from the content (``"JPEG"``, ``"PNG"``, ``"WEBP"``...),
            whatever the file name says.
        original_mode: the Pillow mode stored in the file (``"RGB"``, ``"L"``, ``"RGBA"``,
            ``"I;16"``, ``"CMYK"``, ``"P"``...).
        notes: short machine-readable notes on what was done, in order, e.g.
            ``("exif-rotated-90", "converted-from-CMYK", "extension-mismatch: .jpg is WEBP")``.

    Equality is identity (comparing pixel arrays with ``==`` is ambiguous); compare ``sha256``.
    """

    pixels: np.ndarray = field(repr=False)
    sha256: str
    width: int
    height: int
    format: str
    original_mode: str
    notes: tuple[str, ...] = ()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (memory stays constant).

    Equals :attr:`LoadedImage.sha256` for the same file, so ingest can skip files already in the
    catalogue without decoding them.

    Raises:
        ImageUnreadable: the path is missing, is not a regular file, or cannot be read.
    """
    name = os.fspath(path)
    _check_is_file(Path(path), name)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise _unreadable(name, _os_reason(exc)) from exc
    return digest.hexdigest()


def load_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read, hash and decode one image file to RGB.

    The file is read once; the hash and the decode use the same bytes, so a file that changes on
    disk mid-ingest cannot yield pixels that do not match its hash.

    Args:
        path: the image file. Its extension is not trusted: the format comes from the content and a
            mismatch is recorded in ``notes`` (``"extension-mismatch: .jpg is WEBP"``).
        max_pixels: refuse images whose ``width * height`` exceeds this, checked from the header
            before any pixel is decoded. Pillow's own bomb limit (``2 * Image.MAX_IMAGE_PIXELS``,
            about 179 MP by default) still applies above it.

    Returns:
        A :class:`LoadedImage`.

    Raises:
        ImageUnreadable: missing file, a directory, zero bytes, truncated or corrupt data, not an
            image, or a format outside :data:`ACCEPTED_FORMATS`.
        ImageTooLarge: more than ``max_pixels`` pixels.
        InvalidArgument: ``max_pixels`` is not a positive integer.
    """
    name = os.fspath(path)
    file_path = Path(path)
    _check_is_file(file_path, name)
    try:
        data = file_path.read_bytes()
    except OSError as exc:
        raise _unreadable(name, _os_reason(exc)) from exc
    return _decode(data, name=name, suffix=file_path.suffix, max_pixels=max_pixels)


def load_image_bytes(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "<bytes>"
) -> LoadedImage:
    """Hash and decode an image held in memory (an upload, an archive member).

    Args:
        data: the encoded file content.
        max_pixels: as for :func:`load_image`.
        name: how to refer to the image in error messages; if it has an image extension, a
            mismatch with the real format is noted as for :func:`load_image`.

    Raises:
        ImageUnreadable, ImageTooLarge, InvalidArgument: as for :func:`load_image`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"data must be bytes, not {type(data).__name__}")
    return _decode(bytes(data), name=name, suffix=Path(name).suffix, max_pixels=max_pixels)


def downscale_for_detection(pixels: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink an image so its longer side is at most ``max_side`` pixels, for faster detection.

    Area interpolation (``cv2.INTER_AREA``) averages source pixels, which avoids the aliasing that
    makes small faces vanish under nearest or bilinear shrinking.

    Args:
        pixels: ``(H, W)`` or ``(H, W, C)`` image array (normally ``uint8`` RGB).
        max_side: largest allowed ``max(H, W)`` of the result, in pixels (> 0).

    Returns:
        ``(small, s)`` where coordinates map back as ``original = small_coord * s``. When the image
        already fits, ``small`` is the very same array object and ``s == 1.0``. ``s`` is exact for
        the longer side; the shorter side is rounded to whole pixels, so mapping back along it is
        off by at most ``s / 2`` original pixels.

    Raises:
        InvalidArgument: ``max_side`` is not a positive integer, or ``pixels`` is not 2-D or 3-D.
    """
    _require_positive_int(max_side, "max_side")
    if pixels.ndim not in (2, 3) or min(pixels.shape[:2]) < 1:
        raise InvalidArgument(f"pixels must be an (H, W) or (H, W, C) image, got shape {pixels.shape}")
    height, width = pixels.shape[:2]
    longer = max(height, width)
    if longer <= max_side:
        return pixels, 1.0
    ratio = max_side / longer
    new_w = max(1, round(width * ratio)) if width != longer else max_side
    new_h = max(1, round(height * ratio)) if height != longer else max_side
    small = cv2.resize(pixels, (new_w, new_h), interpolation=cv2.INTER_AREA)
    if small.ndim < pixels.ndim:  # OpenCV drops a trailing channel axis of length 1
        small = small[:, :, np.newaxis]
    return np.ascontiguousarray(small), longer / max_side


# ----------------------------------------------------------------------------- private helpers


def _decode(data: bytes, *, name: str, suffix: str, max_pixels: int) -> LoadedImage:
    """Hash ``data``, check its header size against ``max_pixels``, decode and normalise to RGB."""
    _require_positive_int(max_pixels, "max_pixels")
    if not data:
        raise _unreadable(name, "file is empty (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    image = _open_checked(data, name, max_pixels)
    fmt = "JPEG" if image.format == "MPO" else image.format
    original_mode = image.mode
    orientation_note = _orientation_note(image, name)  # before load(): TIFF load applies it itself
    notes = [note for note in (orientation_note, _extension_mismatch(suffix, fmt)) if note]
    notes.extend(_frame_notes(image))
    _require_complete(data, fmt, name)
    try:
        image.load()
    except _DECODE_ERRORS as exc:
        raise _unreadable(name, f"corrupt or truncated {fmt} data ({_one_line(exc)})") from exc
    image = _upright(image, name)
    try:
        pixels, mode_notes = _to_rgb_array(image)
    except _DECODE_ERRORS as exc:
        reason = f"cannot convert {fmt} mode {image.mode} to RGB ({_one_line(exc)})"
        raise _unreadable(name, reason) from exc
    notes.extend(mode_notes)
    height, width = pixels.shape[:2]
    logger.debug("decoded %s: %s %s %dx%d notes=%s", name, fmt, original_mode, width, height, notes)
    return LoadedImage(pixels, digest, width, height, fmt, original_mode, tuple(notes))


def _require_complete(data: bytes, fmt: str, name: str) -> None:
    """Refuse JPEG and PNG files that stop before their end marker.

    Pillow raises on truncation only while the process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES`` is
    False, and other libraries set it to True on import (face_recognition's api module does), so the
    check is made here, independently of that global.
    """
    tail = data[-64:]
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        raise _unreadable(name, "corrupt or truncated JPEG data (no end-of-image marker)")
    if fmt == "PNG" and b"IEND" not in tail:
        raise _unreadable(name, "corrupt or truncated PNG data (no IEND chunk)")


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open ``data`` lazily (header only) and refuse it if it has more than ``max_pixels`` pixels."""
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        reason = _one_line(exc).removesuffix(".")  # Pillow's own limit, 2 * Image.MAX_IMAGE_PIXELS
        raise ImageTooLarge(f"image too large {name!r}: {reason} (refused before decoding)") from exc
    except Image.UnidentifiedImageError as exc:
        accepted = ", ".join(ACCEPTED_FORMATS)
        raise _unreadable(name, f"not a recognised image (supported: {accepted})") from exc
    except _DECODE_ERRORS as exc:
        raise _unreadable(name, f"corrupt image header ({_one_line(exc)})") from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise _unreadable(name, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image too large {name!r}: {width}x{height} = {width * height:,} pixels exceeds the "
            f"limit of {max_pixels:,} (refused before decoding)"
        )
    return image


def _orientation_note(image: Image.Image, name: str) -> str | None:
    """The note for the EXIF orientation ``image`` declares (None when upright or absent).

    Call before ``image.load()``: Pillow's TIFF loader applies the orientation during load and
    then drops the tag, which would hide that the pixels were turned.
    """
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION_TAG)
    except _DECODE_ERRORS as exc:
        logger.warning("ignoring unreadable EXIF in %r: %s", name, _one_line(exc))
        return "exif-unreadable"
    return _ORIENTATION_NOTES.get(orientation)


def _upright(image: Image.Image, name: str) -> Image.Image:
    """``image`` (loaded) rotated/flipped upright per its EXIF orientation, if it still has one.

    A broken EXIF block is not fatal: the pixels are then used as stored and a warning is logged.
    """
    try:
        if image.getexif().get(_EXIF_ORIENTATION_TAG) not in _ORIENTATION_NOTES:
            return image
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS as exc:
        logger.warning("cannot apply EXIF orientation of %r: %s", name, _one_line(exc))
        return image


def _to_rgb_array(image: Image.Image) -> tuple[np.ndarray, list[str]]:
    """Convert any Pillow mode to a C-contiguous ``(H, W, 3) uint8`` RGB array, with notes.

    Transparency is composited on white (not dropped): pixels hidden by alpha often hold black or
    garbage, and a white background is what a viewer shows. 16-bit greyscale is scaled by 1/257
    so 0..65535 maps onto 0..255 exactly; other integer or float images are stretched linearly
    from their own minimum and maximum.
    """
    mode = image.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8)), []
    if mode.startswith("I") or mode == "F":
        grey, note = _wide_grey_to_uint8(np.asarray(image), mode)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2)), [note]
    has_alpha = mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(background, rgba).convert("RGB")
        notes = [f"converted-from-{mode}", "alpha-composited-on-white"]
    else:
        rgb = image.convert("RGB")
        notes = [f"converted-from-{mode}"]
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)), notes


def _wide_grey_to_uint8(values: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    """Map a single-channel 16/32-bit integer or float array ``(H, W)`` to ``uint8``, with a note.

    Values that fit in 0..65535 are treated as 16-bit samples (``round(v / 257)``: 65535 -> 255,
    257 * k -> k). Anything else is stretched from its own [min, max] to [0, 255].
    """
    if values.ndim != 2:
        raise ValueError(f"unexpected {mode} array shape {values.shape}")
    wide = values.astype(np.float64)
    finite = np.isfinite(wide)
    if not finite.all():
        wide = np.where(finite, wide, 0.0)
    low, high = float(wide.min()), float(wide.max())
    if mode != "F" and low >= 0 and high <= 65535:
        return np.rint(wide / 257.0).astype(np.uint8), "16-bit-scaled"
    span = high - low
    scaled = (wide - low) * (255.0 / span) if span > 0 else np.zeros_like(wide)
    return np.rint(scaled).astype(np.uint8), f"{mode}-stretched-from-{low:g}..{high:g}"


def _frame_notes(image: Image.Image) -> list[str]:
    """Notes for multi-frame files (animated GIF/WebP, multi-page TIFF, MPO): only frame 1 is used."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        return [f"multi-frame: used frame 1 of {frames}"]
    return []


def _extension_mismatch(suffix: str, fmt: str) -> str | None:
    """A note when ``suffix`` is a known image extension of a different format than ``fmt``."""
    if not suffix:
        return None
    claimed = Image.registered_extensions().get(suffix.lower())
    if claimed == "MPO":
        claimed = "JPEG"
    if claimed is None or claimed == fmt:
        return None
    return f"extension-mismatch: {suffix} is {fmt}"


def _check_is_file(path: Path, name: str) -> None:
    """Raise ImageUnreadable unless ``path`` is an existing regular file."""
    try:
        if path.is_dir():
            raise _unreadable(name, "is a directory, not a file")
        if not path.exists():
            raise _unreadable(name, "file not found")
        if not path.is_file():
            raise _unreadable(name, "not a regular file")
    except OSError as exc:  # e.g. a path component is not a directory, name too long
        raise _unreadable(name, _os_reason(exc)) from exc


def _require_positive_int(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgument(f"{what} must be a positive integer, got {value!r}")


def _unreadable(name: str, reason: str) -> ImageUnreadable:
    return ImageUnreadable(f"cannot read image {name!r}: {reason}")


def _os_reason(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
