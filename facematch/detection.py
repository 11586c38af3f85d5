"""Face detection: a cascade of dlib detectors with boxes mapped back to original pixels.

Custody photos are large and posed, so the fast HOG detector runs on a downscaled copy. Probes
(crime-scene stills) are small and hard, so they get upsampled HOG passes and, where enabled, the CNN
detector, but only when the cheaper stage found nothing.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .face_models import DlibModels
from .imaging import downscale_for_detection
from .settings import DetectionSettings
from .types import Detection, FaceBox

log = logging.getLogger(__name__)


def detect_faces(
    models: DlibModels, pixels: np.ndarray, settings: DetectionSettings, *, purpose: str
) -> list[Detection]:
    """Find faces in an RGB image with the cascade suited to ``purpose`` ("custody" or "probe").

    Parameters: ``pixels`` is ``(H, W, 3) uint8`` RGB. Returns detections in original-image pixel
    coordinates, largest first. Stages run in order and stop at the first that finds a face.
    """
    height, width = pixels.shape[:2]
    for stage in _stages(settings, purpose):
        started = time.perf_counter()
        found = stage(models, pixels, settings)
        log.debug("stage %s: %d faces in %.3f s", stage.__name__, len(found), time.perf_counter() - started)
        if found:
            boxes = [d for d in found if d.box.clipped(width, height).area > 0]
            for d in boxes:
                d.box = d.box.clipped(width, height)
            return sorted(boxes, key=lambda d: d.box.area, reverse=True)
    return []


def _stages(settings: DetectionSettings, purpose: str):
    if purpose == "custody":
        stages = [_hog_downscaled, _hog_custody_fine]
    elif purpose == "probe":
        stages = [_hog_probe, _hog_retry]
    else:
        raise ValueError(f"unknown detection purpose {purpose!r}")
    if settings.cnn_fallback:
        stages.append(_cnn)
    return stages


def _hog_downscaled(models, pixels, settings):
    """Custody, first pass: HOG without upsampling on a copy at most ``custody_detect_side`` px long.

    A custody photo is a posed portrait whose face spans at least about a quarter of the longer side,
    so at 320 px the face is 80 px or more, the HOG window's size: no upsampling is needed, and the
    pass costs ~18 ms instead of ~100 ms for upsampled HOG on a 400 px crop. Images no longer than half
    ``custody_detect_side`` are upsampled once. Hits scoring above ``custody_threshold`` count (a
    little below dlib's 0: it keeps the half-profile views that upsampled HOG also finds).
    """
    small, scale = downscale_for_detection(pixels, settings.custody_detect_side)
    upsample = 1 if 2 * max(small.shape[:2]) <= settings.custody_detect_side else 0
    return _hog_thresholded(models, small, upsample, settings.custody_threshold, scale, "hog")


def _hog_custody_fine(models, pixels, settings):
    """Custody, on a miss: faces under a quarter of the frame (an uncropped photo, a wide shot).

    HOG without upsampling on a copy at most ``custody_max_side`` px long, run only when that copy is at
    least twice as large as the first pass's (it then finds faces half the size; a copy closer in size
    would only repeat the first pass at the cost of a slower one).
    """
    longer = max(pixels.shape[:2])
    if min(longer, settings.custody_max_side) < 2 * min(longer, settings.custody_detect_side):
        return []
    small, scale = downscale_for_detection(pixels, settings.custody_max_side)
    return _hog_thresholded(models, small, 0, settings.custody_threshold, scale, "hog-fine")


def _hog_thresholded(models, pixels, upsample: int, threshold: float, scale: float, name: str):
    rects, scores, _ = models.hog_detector.run(np.ascontiguousarray(pixels), upsample, threshold)
    return [Detection(_scaled_box(r, scale), name, float(s)) for r, s in zip(rects, scores)]


def _hog_probe(models, pixels, settings):
    small, scale = downscale_for_detection(pixels, settings.probe_max_side)
    return _hog(models, small, upsample=settings.upsample, scale=scale, name="hog")


def _hog_retry(models, pixels, settings):
    """A second, more sensitive HOG pass, only for images small enough that it stays affordable."""
    if max(pixels.shape[:2]) > settings.retry_max_side:
        return []
    return _hog(models, pixels, upsample=settings.retry_upsample, scale=1.0, name="hog-upsampled")


def _cnn(models, pixels, settings):
    small, scale = downscale_for_detection(pixels, settings.cnn_max_side)
    hits = models.cnn_detector(np.ascontiguousarray(small), 1)
    return [Detection(_scaled_box(h.rect, scale), "cnn", float(h.confidence)) for h in hits]


def _hog(models, pixels, *, upsample: int, scale: float, name: str) -> list[Detection]:
    rects, scores, _ = models.hog_detector.run(np.ascontiguousarray(pixels), upsample, 0.0)
    return [Detection(_scaled_box(r, scale), name, float(s)) for r, s in zip(rects, scores)]


def _scaled_box(rect, scale: float) -> FaceBox:
    return FaceBox(
        int(round(rect.left() * scale)),
        int(round(rect.top() * scale)),
        int(round((rect.right() + 1) * scale)),
        int(round((rect.bottom() + 1) * scale)),
    )
