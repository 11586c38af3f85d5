"""Landmarks and 128-d descriptors for detected faces (dlib's ResNet face model).

Public values are numpy arrays: landmarks ``(n, 2) float32`` (x, y) and embeddings ``(128,) float32``.
"""

from __future__ import annotations

import dlib
import numpy as np

from .face_models import DlibModels
from .settings import EmbeddingSettings
from .types import FaceBox


def _rect(box: FaceBox) -> "dlib.rectangle":
    return dlib.rectangle(int(box.left), int(box.top), int(box.right) - 1, int(box.bottom) - 1)


def _shape(models: DlibModels, pixels: np.ndarray, box: FaceBox, points: str):
    predictor = models.landmarks_68 if points == "68" else models.landmarks_5
    return predictor(pixels, _rect(box))


def _points(shape) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def landmarks_and_embeddings(
    models: DlibModels,
    pixels: np.ndarray,
    boxes: list[FaceBox],
    settings: EmbeddingSettings,
    *,
    landmark_points: str = "68",
) -> tuple[list[np.ndarray], np.ndarray]:
    """Landmarks and descriptors for each box of one image, in one batched call to the network.

    Parameters: ``pixels`` ``(H, W, 3) uint8`` RGB; ``boxes`` in the same pixel coordinates.
    Returns ``(landmarks, embeddings)``: a list of ``(n, 2) float32`` arrays and an ``(len(boxes), 128)
    float32`` array. The descriptor is computed from the same landmarks that are returned, so what is
    stored is what was embedded.
    """
    if not boxes:
        return [], np.zeros((0, 128), dtype=np.float32)
    pixels = np.ascontiguousarray(pixels)
    shapes = dlib.full_object_detections()
    for box in boxes:
        shapes.append(_shape(models, pixels, box, landmark_points))
    vectors = models.encoder.compute_face_descriptor(
        pixels, shapes, num_jitters=settings.num_jitters, padding=settings.padding
    )
    embeddings = np.array([np.asarray(v) for v in vectors], dtype=np.float32).reshape(len(boxes), 128)
    return [_points(s) for s in shapes], embeddings
