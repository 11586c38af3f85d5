"""Plain value types shared across modules (no dlib or FAISS objects cross the public boundary)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MODEL_NAME", "EMBEDDING_DIM", "IMAGE_KINDS", "FaceBox", "UprightView", "Detection", "FaceRecord"]

#: Name of the descriptor model stored with every embedding; bump when the model or alignment changes.
#: Here, not in ``faces.models``, so storage can check embeddings without depending on the face models.
MODEL_NAME = "dlib_face_recognition_resnet_model_v1"
#: Length of every descriptor (dlib's ResNet face model).
EMBEDDING_DIM = 128
#: What an image is: a custody photograph (of a known subject) or a crime-scene image (unidentified faces).
#: Each kind has its own index.
IMAGE_KINDS = ("custody", "scene")


@dataclass(frozen=True)
class FaceBox:
    """A face rectangle in pixel coordinates of the original (EXIF-rotated) image.

    ``left``/``top`` are inclusive, ``right``/``bottom`` exclusive, like a numpy slice.
    """

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)

    def as_xywh(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.width, self.height)

    @classmethod
    def from_xywh(cls, x: int, y: int, w: int, h: int) -> "FaceBox":
        return cls(int(x), int(y), int(x) + int(w), int(y) + int(h))

    def clipped(self, width: int, height: int) -> "FaceBox":
        """The box clipped to an image of ``width`` x ``height`` pixels."""
        return FaceBox(
            max(0, min(self.left, width)),
            max(0, min(self.top, height)),
            max(0, min(self.right, width)),
            max(0, min(self.bottom, height)),
        )


@dataclass(frozen=True)
class UprightView:
    """Where a tilted face stands upright: found in a rotated copy of the image, or turned by the roll
    MTCNN's landmarks give.

    Rotating the original image by ``angle`` degrees (counter-clockwise on screen, OpenCV's convention)
    about ``(cx, cy)`` puts the face upright in a ``width`` x ``height`` box centred on that point (all in
    original pixels). A head tilted by a steep camera angle is found that way; its landmarks are then
    placed on the upright copy, where dlib's shape predictor was trained to work.
    """

    angle: float
    cx: float
    cy: float
    width: float
    height: float

    def mapped(self, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> "UprightView":
        """This view in an image ``sx`` x ``sy`` times as large, then shifted by ``(dx, dy)`` pixels.

        Pixel edges scale, so a centre at integer pixel coordinates maps as ``(c + 0.5) * s - 0.5``.
        """
        return UprightView(self.angle, dx + (self.cx + 0.5) * sx - 0.5, dy + (self.cy + 0.5) * sy - 0.5,
                           self.width * sx, self.height * sy)


@dataclass
class Detection:
    """A detector's hit: the box, which detector/stage found it, and its confidence (detector units).

    ``upright`` is set for faces found in a rotated copy (``box`` is then the axis-aligned box around
    the rotated face box) and for MTCNN's faces (``box`` is then MTCNN's own box).
    """

    box: FaceBox
    detector: str
    confidence: float | None = None
    upright: UprightView | None = None


@dataclass
class FaceRecord:
    """A face found in an image, ready to store: box, landmarks, quality and embedding.

    ``landmarks`` is ``(n, 2) float32`` (x, y) in original-image pixels (n = 68 or 5);
    ``embedding`` is ``(128,) float32``; ``quality`` maps component name to value.
    """

    box: FaceBox
    detector: str
    confidence: float | None
    landmarks: np.ndarray
    embedding: np.ndarray
    quality: dict = field(default_factory=dict)
    quality_score: float | None = None
