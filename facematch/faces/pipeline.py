"""From decoded pixels to stored faces: detect, landmark, embed and judge quality.

``FacePipeline`` owns one set of lazily loaded dlib models. Create one per process (ingest workers do)
or per service; calls on one pipeline are serialised by a lock because dlib objects are not documented
as thread-safe.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

import numpy as np

from facematch.errors import InvalidBox
from facematch.faces.detection import detect_faces, resize_exact
from facematch.faces.models import DlibModels
from facematch.faces.quality import assess_quality
from facematch.settings import Settings
from facematch.types import Detection, FaceBox, FaceRecord

__all__ = ["FacePipeline", "BOX_DETECT_PX", "analysed_in_this_process"]

log = logging.getLogger(__name__)

#: Set once any pipeline of this process analysed an image: dlib has started its thread pool then, and a
#: process forked afterwards deadlocks on that pool's copied locks in its first detection.
_ANALYSED = False


def analysed_in_this_process() -> bool:
    """Whether a ``FacePipeline`` analysed an image in this process (forking it is unsafe then: ``_ANALYSED``)."""
    return _ANALYSED


class FacePipeline:
    """Turns an RGB image into ``FaceRecord``s (box, landmarks, quality, embedding).

    Parameters: ``settings`` (detection and embedding choices); ``models``, the ``DlibModels`` to use
    (default: a new set; ingest workers pass timed ones). Models load on first use.
    """

    def __init__(self, settings: Settings | None = None, *, models: DlibModels | None = None):
        self.settings = settings or Settings.from_env()
        self._models = models if models is not None else DlibModels()
        self._lock = threading.Lock()

    def load_models(self) -> None:
        """Load every model this pipeline's settings use now, not on the first image (a service's warm-up)."""
        with self._lock:
            models, detection = self._models, self.settings.detection
            _ = models.hog_detector, models.cnn_detector, models.encoder
            _ = models.landmarks_68 if detection.landmarks == "68" else models.landmarks_5
            if detection.mtcnn:
                _ = models.mtcnn

    def analyse(self, pixels: np.ndarray, *, purpose: str, box: FaceBox | None = None) -> list[FaceRecord]:
        """All faces of an image (``purpose`` "custody" or "probe"), largest first.

        With ``box`` (an investigator-marked region, original pixels) only the face in that region is
        returned (see :meth:`_detect_in_box`). Raises ``InvalidBox`` when the box is too small or lies
        outside the image.
        """
        global _ANALYSED
        with self._lock:
            _ANALYSED = True
            if box is None:
                detections = detect_faces(self._models, pixels, self.settings.detection, purpose=purpose)
            else:
                detections = [self._detect_in_box(pixels, box)]
            return self._describe(pixels, detections, purpose)

    def _describe(self, pixels: np.ndarray, detections: list[Detection], purpose: str) -> list[FaceRecord]:
        from facematch.faces.embedding import landmarks_and_embeddings

        emb = self.settings.embedding
        probe = purpose == "probe"
        landmarks, embeddings = landmarks_and_embeddings(
            self._models, pixels, [d.box for d in detections], emb,
            landmark_points=self.settings.detection.landmarks,
            num_jitters=emb.probe_jitters if probe else emb.num_jitters, flip=probe and emb.probe_flip,
            uprights=[d.upright for d in detections],
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
        """The face inside an investigator-marked box, placed as well as the detectors can.

        The box plus a quarter of its size on each side is cut out and rescaled so the box's longer side
        is ``BOX_DETECT_PX`` pixels (small CCTV faces are enlarged to where the detectors work best, huge
        ones shrunk to stay fast); the probe cascade runs on that copy, its CNN pass at the copy's own
        size, and a face whose centre lies in the box (and that is not tiny next to it) is mapped back
        to original pixels. When no detector finds one, the landmarks are placed inside the box as
        drawn (moving it to where faces sit in FRMDB's head crops changed no rank; docs/cctv-probes.md).
        """
        height, width = pixels.shape[:2]
        if box.width < 8 or box.height < 8:
            raise InvalidBox(f"marked box {box.as_xywh()} is too small (at least 8x8 pixels)")
        clipped = box.clipped(width, height)
        if clipped.area < 0.5 * box.area:
            raise InvalidBox(f"marked box {box.as_xywh()} lies outside the {width}x{height} image")
        margin_x, margin_y = box.width // 4, box.height // 4
        region = FaceBox(box.left - margin_x, box.top - margin_y, box.right + margin_x, box.bottom + margin_y)
        region = region.clipped(width, height)
        crop, sx, sy = resize_exact(pixels[region.top:region.bottom, region.left:region.right],
                                    BOX_DETECT_PX / max(box.width, box.height))
        settings = dataclasses.replace(self.settings.detection, cnn_max_pixels=crop.shape[0] * crop.shape[1])
        found = detect_faces(self._models, crop, settings, purpose="probe")
        best, best_key = None, None
        for det in found:
            moved = FaceBox(region.left + round(det.box.left * sx), region.top + round(det.box.top * sy),
                            region.left + round(det.box.right * sx), region.top + round(det.box.bottom * sy))
            cx, cy = (moved.left + moved.right) / 2, (moved.top + moved.bottom) / 2
            inside = clipped.left <= cx < clipped.right and clipped.top <= cy < clipped.bottom
            if not inside or moved.width < 0.2 * clipped.width:
                continue
            key = (_overlap(moved, clipped), moved.area)
            if best_key is None or key > best_key:
                upright = det.upright and det.upright.mapped(sx, sy, region.left, region.top)
                best = Detection(moved, f"marked+{det.detector}", det.confidence, upright=upright)
                best_key = key
        if best is not None:
            return best
        log.debug("no detector found a face in marked box %s; using it as drawn", box.as_xywh())
        return Detection(clipped, "marked", None)


#: Longer side, in pixels, to which an investigator-marked box is rescaled before detection: a face
#: filling half the box is then ~100 px wide, over the CNN detector's ~80 px minimum.
BOX_DETECT_PX = 200


def _overlap(a: FaceBox, b: FaceBox) -> float:
    """Share of ``a``'s area that lies inside ``b``."""
    inter = FaceBox(max(a.left, b.left), max(a.top, b.top), min(a.right, b.right), min(a.bottom, b.bottom))
    if inter.width <= 0 or inter.height <= 0 or a.area == 0:
        return 0.0
    return inter.area / a.area
