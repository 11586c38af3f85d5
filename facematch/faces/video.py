"""Video probes: sample frames of a clip (read with OpenCV) for a person-level search.

A clip of one person gives many views of the same face; searching a few of the best is cheaper and
as informative as searching all of them. Frames are read in order, one every ``frame_step``, at most
``max_frames`` of them, and returned as RGB arrays like decoded still images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facematch.errors import ImageTooLarge, ImageUnreadable

__all__ = ["VIDEO_SUFFIXES", "VideoFrame", "is_video", "sample_frames"]

#: File name endings read as video probes (container formats OpenCV's FFmpeg backend opens).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass(frozen=True)
class VideoFrame:
    """One sampled frame: its index in the clip (0-based), ``(H, W, 3) uint8`` RGB pixels, and the
    SHA-256 of the clip file (the frame's content identity is the clip plus its index)."""

    index: int
    pixels: np.ndarray
    sha256: str


def is_video(path: str | Path) -> bool:
    """True when ``path``'s name ends like a video file (``VIDEO_SUFFIXES``)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def sample_frames(path: str | Path, *, frame_step: int, max_frames: int,
                  max_pixels: int) -> list[VideoFrame]:
    """Every ``frame_step``-th frame of the clip at ``path`` from the first, at most ``max_frames``.

    Raises ``ImageUnreadable`` when OpenCV cannot open the file or it yields no frame, and
    ``ImageTooLarge`` when a frame has more than ``max_pixels`` pixels.
    """
    import cv2

    path = Path(path)
    digest = _file_sha256(path)
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ImageUnreadable(f"{path}: not a video OpenCV can open")
        frames: list[VideoFrame] = []
        index = 0
        while len(frames) < max_frames:
            ok = capture.grab()
            if not ok:
                break
            if index % frame_step == 0:
                ok, bgr = capture.retrieve()
                if ok and bgr is not None:
                    if bgr.shape[0] * bgr.shape[1] > max_pixels:
                        raise ImageTooLarge(f"{path}: frames of {bgr.shape[1]}x{bgr.shape[0]} exceed the "
                                            f"{max_pixels:,}-pixel limit")
                    rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                    frames.append(VideoFrame(index, rgb, digest))
            index += 1
    finally:
        capture.release()
    if not frames:
        raise ImageUnreadable(f"{path}: no frame could be read from the video")
    return frames


def _file_sha256(path: Path) -> str:
    """SHA-256 of a file read in 1 MiB blocks (clips can be far larger than memory allows)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ImageUnreadable(f"{path}: cannot read the video: {exc}") from None
    return digest.hexdigest()
