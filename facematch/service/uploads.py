"""What an upload must be before it is kept: an image (sniffed, not trusted by name), within the pixel
limit; kept once by SHA-256 under ``<data_dir>/probes`` (readable only through the service's checks)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image, ImageOps

from facematch.errors import ImageTooLarge, ImageUnreadable

__all__ = ["sniff", "keep_probe", "face_crop", "FACE_SIDE"]

#: Side in pixels of the face crops shown side by side (probe and candidate at the same size).
FACE_SIDE = 224
_FORMATS = {b"\xff\xd8\xff": ("JPEG", ".jpg"), b"\x89PNG\r\n\x1a\n": ("PNG", ".png"), b"BM": ("BMP", ".bmp")}
_KNOWN_OTHER = {b"%PDF": "a PDF document", b"PK\x03\x04": "a ZIP archive", b"GIF8": "a GIF (not accepted)",
                b"<": "text or HTML", b"{": "JSON or text", b"\x1f\x8b": "a gzip archive"}


def sniff(data: bytes, name: str, max_pixels: int) -> tuple[str, int, int]:
    """The image's file suffix, width and height; ``ImageUnreadable`` (with what the file really is) or
    ``ImageTooLarge`` otherwise. The file's name is never trusted."""
    suffix = None
    for magic, (_, ext) in _FORMATS.items():
        if data.startswith(magic):
            suffix = ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        suffix = ".webp"
    if suffix is None:
        what = next((v for k, v in _KNOWN_OTHER.items() if data.lstrip()[:len(k)] == k), "not a JPEG, PNG, WebP or BMP image")
        raise ImageUnreadable(f"{name!r} is {what}: upload a JPEG, PNG, WebP or BMP image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception as exc:
        raise ImageUnreadable(f"{name!r} cannot be decoded as an image: {exc}") from None
    if width * height > max_pixels:
        raise ImageTooLarge(f"{name!r} has {width}x{height} pixels, more than the limit of {max_pixels:,}")
    return suffix, width, height


def keep_probe(data: bytes, suffix: str, data_dir: Path) -> Path:
    """Store the bytes once under their SHA-256 (owner-only permissions); returns the path."""
    folder = data_dir / "probes"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()}{suffix}"
    if not path.exists():
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        tmp.chmod(0o600)
        tmp.replace(path)
    return path


def face_crop(path: str, box: tuple[int, int, int, int] | None) -> bytes:
    """A ``FACE_SIDE`` square JPEG of the face in ``box`` (x, y, w, h) with a margin, or the whole image."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        if box:
            x, y, w, h = box
            side = int(max(w, h) * 1.5)
            cx, cy = x + w / 2, y + h / 2
            image = image.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
        image = ImageOps.pad(image, (FACE_SIDE, FACE_SIDE), color=(32, 32, 32))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=88)
        return out.getvalue()
