"""From decoded pixels to stored faces: detect, landmark, embed and judge quality.

``FacePipeline`` owns one set of lazily loaded dlib models. Create one per process (ingest workers do)
or per service; calls on one pipeline are serialised by a lock because dlib objects are not documented
as thread-safe.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from .detection import detect_faces
from .errors import InvalidBox
from .face_models import DlibModels
from .quality import assess_quality
from .settings import Settings
from .types import Detection, FaceBox, FaceRecord

log = logging.getLogger(__name__)


class FacePipeline:
    """Turns an RGB image into ``FaceRecord``s (box, landmarks, quality, embedding).

    Parameters: ``settings`` (detection and embedding choices). Models load on first use.
    """

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        self._models = DlibModels()
        self._lock = threading.Lock()

    def analyse(self, pixels: np.ndarray, *, purpose: str, box: FaceBox | None = None) -> list[FaceRecord]:
        """All faces of an image (``purpose`` "custody" or "probe"), largest first.

        With ``box`` (an investigator-marked region, original pixels) only the face in that region is
        returned: the detector is re-run inside it to place landmarks well, and the box itself is used
        when no detector agrees. Raises ``InvalidBox`` when the box lies outside the image.
        """
        with self._lock:
            if box is None:
                detections = detect_faces(self._models, pixels, self.settings.detection, purpose=purpose)
            else:
                detections = [self._detect_in_box(pixels, box)]
            return self._describe(pixels, detections)

    def _describe(self, pixels: np.ndarray, detections: list[Detection]) -> list[FaceRecord]:
        from .embedding import landmarks_and_embeddings

        boxes = [d.box for d in detections]
        landmarks, embeddings = landmarks_and_embeddings(
            self._models, pixels, boxes, self.settings.embedding,
            landmark_points=self.settings.detection.landmarks,
        )
        records = []
        for det, points, vector in zip(detections, landmarks, embeddings):
            quality = assess_quality(pixels, det.box, points, detector_confidence=det.confidence)
            records.append(
                FaceRecord(
                    box=det.box, detector=det.detector, confidence=det.confidence, landmarks=points,
                    embedding=vector, quality=quality.to_dict(), quality_score=quality.score,
                )
            )
        return records

    def _detect_in_box(self, pixels: np.ndarray, box: FaceBox) -> Detection:
        height, width = pixels.shape[:2]
        if box.width < 8 or box.height < 8:
            raise InvalidBox(f"marked box {box.as_xywh()} is too small (at least 8x8 pixels)")
        clipped = box.clipped(width, height)
        if clipped.area < 0.5 * box.area:
            raise InvalidBox(f"marked box {box.as_xywh()} lies outside the {width}x{height} image")
        margin_x, margin_y = box.width // 2, box.height // 2
        region = FaceBox(box.left - margin_x, box.top - margin_y, box.right + margin_x, box.bottom + margin_y)
        region = region.clipped(width, height)
        crop = np.ascontiguousarray(pixels[region.top:region.bottom, region.left:region.right])
        found = detect_faces(self._models, crop, self.settings.detection, purpose="probe")
        best, best_overlap = None, 0.0
        for det in found:
            moved = FaceBox(det.box.left + region.left, det.box.top + region.top,
                            det.box.right + region.left, det.box.bottom + region.top)
            overlap = _iou(moved, clipped)
            if overlap > best_overlap:
                best, best_overlap = Detection(moved, f"marked+{det.detector}", det.confidence), overlap
        if best is not None and best_overlap >= 0.3:
            return best
        log.debug("no detector agreed with marked box %s; using it as drawn", box.as_xywh())
        return Detection(clipped, "marked", None)


def _iou(a: FaceBox, b: FaceBox) -> float:
    inter = FaceBox(max(a.left, b.left), max(a.top, b.top), min(a.right, b.right), min(a.bottom, b.bottom))
    if inter.width <= 0 or inter.height <= 0:
        return 0.0
    union = a.area + b.area - inter.area
    return inter.area / union if union else 0.0
