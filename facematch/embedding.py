"""Landmarks, aligned face chips and 128-d descriptors for detected faces (dlib's ResNet face model).

Public values are numpy arrays: landmarks ``(n, 2) float32`` (x, y), chips ``(150, 150, 3) uint8`` RGB
and embeddings ``(128,) float32``.

A descriptor is computed from an *aligned chip*: the face rotated upright and scaled to 150x150 pixels
from its landmarks (``dlib.get_face_chip``), exactly what dlib does inside ``compute_face_descriptor``.
Cutting the chip ourselves lets the same alignment serve the optional mirrored copy (``flip``).
"""

from __future__ import annotations

import dlib
import numpy as np

from .face_models import DlibModels
from .settings import EmbeddingSettings
from .types import FaceBox

#: Side of the aligned chip dlib's descriptor network expects, in pixels.
CHIP_SIZE = 150


def _rect(box: FaceBox) -> "dlib.rectangle":
    return dlib.rectangle(int(box.left), int(box.top), int(box.right) - 1, int(box.bottom) - 1)


def _shape(models: DlibModels, pixels: np.ndarray, box: FaceBox, points: str):
    if points not in ("68", "5"):
        raise ValueError(f"landmark points must be '68' or '5', got {points!r}")
    predictor = models.landmarks_68 if points == "68" else models.landmarks_5
    return predictor(pixels, _rect(box))


def _points(shape) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def aligned_chips(
    models: DlibModels, pixels: np.ndarray, boxes: list[FaceBox], *, landmark_points: str = "68",
    padding: float = 0.25,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Landmarks and aligned 150x150 chips for each box of one image.

    Parameters: ``pixels`` ``(H, W, 3) uint8`` RGB; ``boxes`` in the same pixel coordinates;
    ``landmark_points`` "68" or "5" (which dlib shape predictor aligns the face); ``padding`` the
    margin around the face in the chip, as a fraction of the face size (dlib's default 0.25).
    Returns ``(landmarks, chips)``: lists of ``(n, 2) float32`` arrays and ``(150, 150, 3) uint8`` chips.
    """
    if not boxes:
        return [], []
    pixels = np.ascontiguousarray(pixels)
    shapes = dlib.full_object_detections()
    for box in boxes:
        shapes.append(_shape(models, pixels, box, landmark_points))
    chips = dlib.get_face_chips(pixels, shapes, size=CHIP_SIZE, padding=padding)
    return [_points(s) for s in shapes], [np.ascontiguousarray(c) for c in chips]


def chip_descriptors(models: DlibModels, chips: list[np.ndarray], *, num_jitters: int = 1,
                     flip: bool = False) -> np.ndarray:
    """Descriptors of aligned chips: ``(len(chips), 128) float32``.

    ``num_jitters`` > 1 averages that many randomly jittered copies (dlib's option; costs that many
    network passes). ``flip`` also describes each mirrored chip and averages the two descriptors, which
    evens out the side of the face turned to the camera (one more network pass per face).
    """
    if not chips:
        return np.zeros((0, 128), dtype=np.float32)
    batch = [np.ascontiguousarray(c) for c in chips]
    if flip:
        batch += [np.ascontiguousarray(c[:, ::-1]) for c in chips]
    vectors = models.encoder.compute_face_descriptor(batch, num_jitters=num_jitters)
    out = np.array([np.asarray(v) for v in vectors], dtype=np.float32).reshape(len(batch), 128)
    if flip:
        out = (out[: len(chips)] + out[len(chips):]) / 2
    return out


def landmarks_and_embeddings(
    models: DlibModels,
    pixels: np.ndarray,
    boxes: list[FaceBox],
    settings: EmbeddingSettings,
    *,
    landmark_points: str = "68",
    num_jitters: int | None = None,
    flip: bool = False,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Landmarks and descriptors for each box of one image, in one batched call to the network.

    Parameters: ``pixels`` ``(H, W, 3) uint8`` RGB; ``boxes`` in the same pixel coordinates;
    ``num_jitters`` overrides ``settings.num_jitters`` (probes may use another value than enrolment);
    ``flip`` averages each descriptor with that of the mirrored chip (see :func:`chip_descriptors`).
    Returns ``(landmarks, embeddings)``: a list of ``(n, 2) float32`` arrays and an ``(len(boxes), 128)
    float32`` array. The descriptor is computed from the same landmarks that are returned, so what is
    stored is what was embedded.
    """
    landmarks, chips = aligned_chips(models, pixels, boxes, landmark_points=landmark_points,
                                     padding=settings.padding)
    jitters = settings.num_jitters if num_jitters is None else num_jitters
    return landmarks, chip_descriptors(models, chips, num_jitters=jitters, flip=flip)
