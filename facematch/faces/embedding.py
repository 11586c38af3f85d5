"""Landmarks, aligned face chips and 128-d descriptors for detected faces (dlib's ResNet face model).

Public values are numpy arrays: landmarks ``(n, 2) float32`` (x, y), chips ``(150, 150, 3) uint8`` RGB
and embeddings ``(128,) float32``.

A descriptor is computed from an *aligned chip*: the face rotated upright and scaled to 150x150 pixels
from its landmarks (``dlib.get_face_chip``), exactly what dlib does inside ``compute_face_descriptor``.
Cutting the chip ourselves lets the same alignment serve the optional mirrored copy (``flip``).
"""

from __future__ import annotations

import cv2
import dlib
import numpy as np

from facematch.faces.models import DlibModels
from facematch.settings import EmbeddingSettings
from facematch.types import FaceBox, UprightView

__all__ = ["CHIP_SIZE", "aligned_chips", "chip_descriptors", "landmarks_and_embeddings"]

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
    padding: float = 0.25, uprights: list[UprightView | None] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Landmarks and aligned 150x150 chips for each box of one image.

    Parameters: ``pixels`` ``(H, W, 3) uint8`` RGB; ``boxes`` in the same pixel coordinates;
    ``landmark_points`` "68" or "5" (which dlib shape predictor aligns the face); ``padding`` the
    margin around the face in the chip, as a fraction of the face size (dlib's default 0.25);
    ``uprights``, per box, the view in which a tilted face stands upright (or None): its landmarks
    are placed on that upright copy (:func:`_upright_landmarks_and_chip`).
    Returns ``(landmarks, chips)``: lists of ``(n, 2) float32`` arrays (original pixels) and
    ``(150, 150, 3) uint8`` chips.
    """
    if not boxes:
        return [], []
    pixels = np.ascontiguousarray(pixels)
    uprights = uprights or [None] * len(boxes)
    landmarks, chips = [], []
    for box, view in zip(boxes, uprights):
        if view is None:
            shape = _shape(models, pixels, box, landmark_points)
            landmarks.append(_points(shape))
            chips.append(np.ascontiguousarray(dlib.get_face_chip(pixels, shape, size=CHIP_SIZE, padding=padding)))
        else:
            points, chip = _upright_landmarks_and_chip(models, pixels, view, landmark_points, padding)
            landmarks.append(points)
            chips.append(chip)
    return landmarks, chips


def _upright_landmarks_and_chip(models: DlibModels, pixels: np.ndarray, view: UprightView,
                                landmark_points: str, padding: float) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks (original pixels) and chip of a face that stands upright in ``view``.

    A square patch around the face is cut from the image turned by ``view.angle`` (2.4 face widths wide,
    enough for the chip's margin at any angle); the shape predictor and the chip work on that patch
    exactly as on an upright face, and the landmarks are mapped back to the original pixels.
    """
    half = int(np.ceil(1.2 * max(view.width, view.height)))
    turn = cv2.getRotationMatrix2D((view.cx, view.cy), view.angle, 1.0)
    turn[:, 2] += (half - view.cx, half - view.cy)
    patch = np.ascontiguousarray(cv2.warpAffine(pixels, turn, (2 * half, 2 * half), flags=cv2.INTER_LINEAR,
                                                borderMode=cv2.BORDER_CONSTANT))
    # the face's centre is the patch's pixel (half, half): its box's edges lie half a pixel further on
    box = FaceBox(int(round(half + 0.5 - view.width / 2)), int(round(half + 0.5 - view.height / 2)),
                  int(round(half + 0.5 + view.width / 2)), int(round(half + 0.5 + view.height / 2)))
    shape = _shape(models, patch, box, landmark_points)
    chip = np.ascontiguousarray(dlib.get_face_chip(patch, shape, size=CHIP_SIZE, padding=padding))
    back = cv2.invertAffineTransform(turn)
    points = _points(shape) @ back[:, :2].T.astype(np.float32) + back[:, 2].astype(np.float32)
    return points.astype(np.float32), chip


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
    uprights: list[UprightView | None] | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Landmarks and descriptors for each box of one image, in one batched call to the network.

    Parameters: ``pixels`` ``(H, W, 3) uint8`` RGB; ``boxes`` in the same pixel coordinates;
    ``num_jitters`` overrides ``settings.num_jitters`` (probes may use another value than enrolment);
    ``flip`` averages each descriptor with that of the mirrored chip (see :func:`chip_descriptors`);
    ``uprights`` as in :func:`aligned_chips`.
    Returns ``(landmarks, embeddings)``: a list of ``(n, 2) float32`` arrays and an ``(len(boxes), 128)
    float32`` array. The descriptor is computed from the same landmarks that are returned, so what is
    stored is what was embedded.
    """
    landmarks, chips = aligned_chips(models, pixels, boxes, landmark_points=landmark_points,
                                     padding=settings.padding, uprights=uprights)
    jitters = settings.num_jitters if num_jitters is None else num_jitters
    return landmarks, chip_descriptors(models, chips, num_jitters=jitters, flip=flip)
