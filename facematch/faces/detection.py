"""Face detection: a cascade of detectors with boxes mapped back to original pixels.

Custody photos are large and posed, so the fast HOG detector runs on a downscaled copy, then (on a
miss: profile views) MTCNN in large, uncropped photos, then, where MTCNN found nothing, dlib's CNN
detector on a crop where a mirrored MTCNN pass saw a face (large photos) or on the whole photo (head
crops), then, in large photos MTCNN does not search, HOG on a larger copy for small faces. Probes
(crime-scene stills) are small and hard, so they get a cascade of ever more sensitive and costly
stages (dlib's CNN detector on a rescaled copy, then MTCNN for heads seen from the side or above, then
dlib's CNN on turned copies for heads tilted under a high camera, then on a larger copy, then upsampled
HOG), each run only when the earlier ones found nothing, and only while the probe's time budget allows
(see :func:`detect_faces`).
"""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np

from facematch.faces.imaging import downscale_for_detection
from facematch.faces.models import DlibModels
from facematch.settings import DetectionSettings
from facematch.types import Detection, FaceBox, UprightView

__all__ = ["CNN_SECONDS_PER_PIXEL", "HOG_SECONDS_PER_PIXEL", "MTCNN_SECONDS_PER_PIXEL", "ALWAYS_RUN",
    "MIN_IMAGE_SIDE", "detect_faces", "probe_stage_names", "run_probe_stage", "ROTATED_STAGE", "rotated_stage_name",
    "upright_hull", "MTCNN_STAGE", "CUSTODY_RESCUE_STAGE", "MTCNN_TO_DLIB_SIDE", "mtcnn_roll", "resize_exact"]

log = logging.getLogger(__name__)

#: CPU seconds per processed pixel on one core of the 2-core development machine, image pyramid included
#: (measured on the FRMDB CCTV crops, docs/cctv-probes.md): dlib's CNN detector (0.20 s at 160x160,
#: 0.81 s at 320x320) and its HOG detector (per pixel after upsampling). They keep stages within budget.
CNN_SECONDS_PER_PIXEL = 7.8e-6
HOG_SECONDS_PER_PIXEL = 2.8e-7
#: The same for MTCNN, per pixel of the copy it scans when its pyramid starts at 12 px faces.
MTCNN_SECONDS_PER_PIXEL = 1.0e-6


#: Probe stages run whatever the budget: the first HOG pass, and the first CNN pass, which finds three
#: times as many CCTV faces as HOG. (HOG on a large crop is estimated at over a second; the budget then
#: skipped the CNN and lost faces it finds in half a second: 3 of the 140 dev CCTV crops.)
ALWAYS_RUN = ("hog", "cnn")

#: Images narrower or lower than this hold no detectable face (MTCNN's smallest is 12 px, dlib's
#: ~40 px); dlib's CNN raises on images under 4 px, so they are answered "no face" before any stage.
MIN_IMAGE_SIDE = 8


def detect_faces(
    models: DlibModels, pixels: np.ndarray, settings: DetectionSettings, *, purpose: str,
    budget_s: float | None = None,
) -> list[Detection]:
    """Find faces in an RGB image with the cascade suited to ``purpose`` ("custody" or "probe").

    Parameters: ``pixels`` is ``(H, W, 3) uint8`` RGB; ``budget_s`` caps the CPU seconds the probe
    cascade may spend (default ``settings.probe_budget_s``): apart from the first HOG pass and the first
    CNN pass (``ALWAYS_RUN``), a stage that would take the cascade past the budget is skipped. Costs are *estimated* from the
    pixels each stage scans (one core of the development machine), not measured, so the same image
    always gets the same stages and the same faces, however busy the machine (a measured budget lost
    one CCTV face in 140 under heavy load). Returns detections in original-image pixel
    coordinates, largest first. Stages run in order and stop at the first that finds a face.
    """
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        log.debug("image of %dx%d px: too small to hold a face", width, height)
        return []
    budget = settings.probe_budget_s if budget_s is None else budget_s
    spent = 0.0
    for name, stage in _stages(settings, purpose):
        estimate = _estimated_cost(name, pixels.shape, settings) if purpose == "probe" else 0.0
        if purpose == "probe" and name not in ALWAYS_RUN and spent + estimate > budget:
            log.debug("stage %s skipped: %.2f s spent, about %.2f s needed, budget %.2f s",
                      name, spent, estimate, budget)
            continue
        stage_started = time.thread_time()
        found = stage(models, pixels, settings)
        spent += estimate
        log.debug("stage %s: %d faces in %.3f s CPU (estimated %.3f s)", name, len(found),
                  time.thread_time() - stage_started, estimate)
        boxes = [d for d in found if d.box.clipped(width, height).area > 0]
        if boxes:
            for d in boxes:
                d.box = d.box.clipped(width, height)
            return sorted(boxes, key=lambda d: d.box.area, reverse=True)
    return []


def probe_stage_names(settings: DetectionSettings) -> list[str]:
    """Names of the probe cascade's stages, in the order they run."""
    return [name for name, _ in _stages(settings, "probe")]


def run_probe_stage(name: str, models: DlibModels, pixels: np.ndarray,
                    settings: DetectionSettings) -> list[Detection]:
    """Run one probe stage alone (for measuring each stage's recall and cost); original-pixel boxes."""
    stages = dict(_stages(settings, "probe"))
    if name not in stages:
        raise ValueError(f"unknown probe stage {name!r}; stages are {sorted(stages)}")
    return stages[name](models, pixels, settings)


def _stages(settings: DetectionSettings, purpose: str):
    if purpose == "custody":
        # the CNN before hog-fine: in an uncropped photo hog-fine's weak, smallest-scale hits on a profile
        # are an eye or an ear (docs/cctv-probes.md); hog-fine then looks only for faces too small for both.
        # MTCNN (large photos only) first: it finds the CNN's profiles for ~5% of its cost; on its misses
        # the CNN scans only where a mirrored MTCNN pass saw a face (the rescue stage)
        stages = [("hog", _hog_downscaled), (MTCNN_STAGE, _mtcnn_custody)]
        if settings.custody_cnn:
            stages.append((CUSTODY_RESCUE_STAGE, _custody_rescue))
            stages.append(("cnn", _cnn_custody))
        stages.append(("hog-fine", _hog_custody_fine))
    elif purpose == "probe":
        if settings.cnn_fallback:
            groups = {"hog": [("hog", _hog_probe)], "cnn": [("cnn", _cnn)],
                      "rotated": [(rotated_stage_name(a), _cnn_rotated(a)) for a in settings.rotation_angles]}
            if settings.mtcnn_after not in groups:
                raise ValueError(f"mtcnn_after must be one of {sorted(groups)}, got {settings.mtcnn_after!r}")
            if settings.mtcnn:
                groups[settings.mtcnn_after] = groups[settings.mtcnn_after] + [(MTCNN_STAGE, _mtcnn)]
            stages = groups["hog"] + groups["cnn"] + groups["rotated"]
            if settings.mtcnn:
                stages += [(mtcnn_rotated_stage_name(a), _mtcnn_rotated(a)) for a in settings.mtcnn_rotation_angles]
                stages += [(mtcnn_stretched_stage_name(f), _mtcnn_stretched(f)) for f in settings.mtcnn_stretch_factors]
            stages += [("cnn-upsampled", _cnn_upsampled), ("hog-upsampled", _hog_retry)]
        else:
            stages = [("hog", _hog_probe), ("hog-upsampled", _hog_retry)]
    else:
        raise ValueError(f"unknown detection purpose {purpose!r}")
    return stages


def _estimated_cost(name: str, shape: tuple, settings: DetectionSettings) -> float:
    """Expected CPU seconds of a probe stage on an image of ``shape``, from the pixels it processes."""
    pixels = shape[0] * shape[1]
    if name == "hog":
        return HOG_SECONDS_PER_PIXEL * pixels * _probe_hog_factor(shape, settings) ** 2
    if name == "hog-upsampled":
        return 0.0 if max(shape[:2]) > settings.retry_max_side else (
            HOG_SECONDS_PER_PIXEL * pixels * 4 ** settings.retry_upsample)
    if name in ("cnn", "cnn-upsampled"):
        factor = _cnn_factor(shape, settings) * (2 if name == "cnn-upsampled" else 1)
        return CNN_SECONDS_PER_PIXEL * pixels * factor * factor
    if name.startswith(ROTATED_STAGE):
        factor = _rotated_factor(shape, settings)
        return CNN_SECONDS_PER_PIXEL * pixels * factor * factor
    if name.startswith(MTCNN_ROTATED_STAGE):
        factor = _mtcnn_rotated_factor(shape, settings)
        return MTCNN_SECONDS_PER_PIXEL * pixels * factor * factor * (12 / settings.mtcnn_rotated_min_face) ** 2
    if name.startswith(MTCNN_STRETCHED_STAGE):
        factor = _mtcnn_rotated_factor(shape, settings)
        stretch = float(name[len(MTCNN_STRETCHED_STAGE):])
        return MTCNN_SECONDS_PER_PIXEL * pixels * factor * factor * stretch * (12 / settings.mtcnn_rotated_min_face) ** 2
    if name == MTCNN_STAGE:
        return sum(MTCNN_SECONDS_PER_PIXEL * pixels * factor * factor * (12 / min_face) ** 2
                   for factor, min_face, _ in _mtcnn_copies(shape, settings))
    return 0.0


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


def custody_photo_is_large(shape: tuple, settings: DetectionSettings) -> bool:
    """Whether a custody image is large enough to hold a face the first HOG pass cannot see.

    True when a copy ``custody_max_side`` px long is at least twice as large as the first pass's (longer
    side 640 px or more by default): an uncropped photo (FRMDB's 972x544 custody photos, faces ~220 px,
    a quarter of the width) rather than a head crop (FRMDB's 457 px mugshots).
    """
    longer = max(shape[:2])
    return min(longer, settings.custody_max_side) >= 2 * min(longer, settings.custody_detect_side)


def _hog_custody_fine(models, pixels, settings):
    """Custody, last: faces under a quarter of the frame (a wide shot), in large photos only.

    HOG without upsampling on a copy at most ``custody_max_side`` px long, run only when that copy is at
    least twice as large as the first pass's (:func:`custody_photo_is_large`: it then finds faces half the
    size; a copy closer in size would only repeat the first pass at the cost of a slower one).
    """
    if not custody_photo_is_large(pixels.shape, settings) or settings.custody_mtcnn_side:
        return []
    small, scale = downscale_for_detection(pixels, settings.custody_max_side)
    return _hog_thresholded(models, small, 0, settings.custody_threshold, scale, "hog-fine")


def _cnn_custody(models, pixels, settings):
    """Custody, when HOG found nothing: dlib's CNN on a copy of about ``custody_cnn_pixels`` (never enlarged).

    dlib's HOG detector is frontal: it misses the profile (+-90 degree) views of a custody set, which
    the CNN finds (40 of 42 FRMDB profile mugshots at 25k pixels, ~0.2 s each: a head crop's face
    stays over the CNN's ~80 px minimum). Enrolling them gives side-on CCTV probes a gallery view at
    their own angle (docs/cctv-probes.md). In a large, uncropped photo (:func:`custody_photo_is_large`)
    the face is a quarter of the width, ~50 px in a 25k copy, too small: the copy is then about
    ``custody_cnn_large_pixels`` (50k, ~0.33 s: 17 of the 18 eye-level FRMDB lowres custody photos the
    first HOG pass misses, as 60k; 25k found none of the 15 it ran on). It runs before hog-fine, which put
    an 89 px box on an eye on three of those profiles (docs/cctv-probes.md).
    """
    large = custody_photo_is_large(pixels.shape, settings)
    if large and settings.custody_mtcnn_side and not settings.custody_mtcnn_cnn_fallback:
        return []  # MTCNN has looked (_mtcnn_custody), and the CNN where its mirrored pass saw a face (_custody_rescue)
    budget = settings.custody_cnn_large_pixels if large else settings.custody_cnn_pixels
    factor = min(1.0, (budget / (pixels.shape[0] * pixels.shape[1])) ** 0.5)
    return _cnn_at(models, pixels, factor, "cnn")


def _mtcnn_custody(models, pixels, settings):
    """Custody, large photos, when HOG found nothing: MTCNN on a copy ``custody_mtcnn_side`` px long.

    In an uncropped photo (:func:`custody_photo_is_large`) it runs before the CNN (~0.33 s), which then
    runs only on a crop of MTCNN's misses (:func:`_custody_rescue`), and replaces hog-fine (~0.1 s),
    for ~16 ms: on FRMDB's 972x544 lowres custody photos it finds as many profiles as the CNN (17 of the 18 eye-level ones HOG misses) and,
    from ``custody_mtcnn_min_face`` px, the faces hog-fine looked for (settings.py has the counts).
    Its hits carry the roll-turned
    :class:`UprightView` of the probe MTCNN stage, so landmarks are placed as for dlib's boxes; search
    treats them as non-frontal views, as the CNN's (``search.matching.NONFRONTAL_DETECTORS``).
    """
    if not settings.custody_mtcnn_side or not custody_photo_is_large(pixels.shape, settings):
        return []
    factor = min(1.0, settings.custody_mtcnn_side / max(pixels.shape[:2]))
    resized, sx, sy = resize_exact(pixels, factor)
    faces = models.mtcnn.detect(resized, min_face=settings.custody_mtcnn_min_face,
                                thresholds=settings.mtcnn_thresholds)
    return [_mtcnn_detection(face, sx, sy) for face in faces]


#: Name of the custody stage that verifies a mirrored, turned MTCNN pass's faces with the CNN on a crop.
CUSTODY_RESCUE_STAGE = "mtcnn-mirror-cnn"


def _custody_rescue(models, pixels, settings):
    """Custody, large photos MTCNN found nothing in: MTCNN on a mirrored copy, turned; the CNN checks its face.

    MTCNN misses a few profiles that dlib's CNN finds (033/Img_13 of the lowres protocol, hair over
    the cheek), but the CNN on the whole ~50k-pixel copy costs ~0.3 s on every photo MTCNN misses, most
    of which hold no face at all (backs and tops of heads). MTCNN is not mirror-symmetric: on the
    mirrored ``custody_mtcnn_side`` copy turned by each of ``custody_rescue_turns`` degrees (~15 ms a
    turn) it finds 033's profile and 029/Img_12's, but also shoulders, ears and faces seen from above
    that the CNN does not accept. So its most probable face only says where to look: the CNN runs on a
    square ``custody_rescue_margin`` times that face's side, cut from the full-photo CNN's own copy on
    its stride grid (:func:`_cnn_around`), and its box is the detection ("cnn", the box the full-photo
    CNN drew). Counts and costs in docs/cctv-probes.md.
    """
    if (not settings.custody_rescue_turns or not settings.custody_mtcnn_side or settings.custody_mtcnn_cnn_fallback
            or not custody_photo_is_large(pixels.shape, settings)):
        return []
    factor = min(1.0, settings.custody_mtcnn_side / max(pixels.shape[:2]))
    resized, sx, sy = resize_exact(pixels, factor)
    mirrored = np.ascontiguousarray(resized[:, ::-1])
    width = mirrored.shape[1]
    for angle in settings.custody_rescue_turns:
        turned, back, _, _ = _turned_copy(mirrored, 1.0, angle)
        faces = models.mtcnn.detect(turned, min_face=settings.custody_mtcnn_min_face,
                                    thresholds=settings.mtcnn_thresholds)
        if not faces:
            continue
        left, top, right, bottom = faces[0].box  # the most probable face only: a second check costs ~0.1 s
        x, y = back @ np.array([(left + right) / 2 - 0.5, (top + bottom) / 2 - 0.5, 1.0])
        x = width - 1 - x  # pixel centres of the mirrored copy back to the resized copy's
        side = (right - left + bottom - top) / 2 * (sx + sy) / 2
        found = _cnn_around(models, pixels, (x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5, side, settings)
        if found:
            return found
    return []


def _cnn_around(models, pixels, cx: float, cy: float, side: float, settings) -> list[Detection]:
    """The CNN on a square ``custody_rescue_margin`` x ``side`` around ``(cx, cy)`` (original pixels), cut from
    the copy the full-photo CNN scans (:func:`_cnn_custody`, ~``custody_cnn_large_pixels``) at a multiple of
    its 8 px stride, so it sees the same pixels on the same grid and draws the same box; original pixels."""
    height, width = pixels.shape[:2]
    factor = min(1.0, (settings.custody_cnn_large_pixels / (height * width)) ** 0.5)
    copy, sx, sy = resize_exact(pixels, factor)
    half = settings.custody_rescue_margin * side / 2
    x0 = max(0, int((cx - half) / sx) // CNN_STRIDE * CNN_STRIDE)
    y0 = max(0, int((cy - half) / sy) // CNN_STRIDE * CNN_STRIDE)
    x1, y1 = min(copy.shape[1], int(np.ceil((cx + half) / sx))), min(copy.shape[0], int(np.ceil((cy + half) / sy)))
    if min(x1 - x0, y1 - y0) < MIN_IMAGE_SIDE:
        return []
    hits = models.cnn_detector(np.ascontiguousarray(copy[y0:y1, x0:x1]), 0)
    return [Detection(_mapped_box(dlib_translated(h.rect, x0, y0), sx, sy), "cnn", float(h.confidence)) for h in hits]


def _hog_thresholded(models, pixels, upsample: int, threshold: float, scale: float, name: str):
    rects, scores, _ = models.hog_detector.run(np.ascontiguousarray(pixels), upsample, threshold)
    return [Detection(_scaled_box(r, scale), name, float(s)) for r, s in zip(rects, scores)]


def _probe_hog_factor(shape: tuple, settings: DetectionSettings) -> float:
    """Linear size of what probe HOG scans, relative to the image (downscaling, then upsampling)."""
    return min(1.0, settings.probe_max_side / max(shape[:2])) * 2 ** settings.upsample


def _hog_probe(models, pixels, settings):
    """Probe, first pass: HOG (``upsample`` times) on a copy at most ``probe_max_side`` px long."""
    small, scale = downscale_for_detection(pixels, settings.probe_max_side)
    return _hog(models, small, upsample=settings.upsample, scale=scale, name="hog")


def _hog_retry(models, pixels, settings):
    """A second, more sensitive HOG pass, only for images small enough that it stays affordable."""
    if max(pixels.shape[:2]) > settings.retry_max_side:
        return []
    return _hog(models, pixels, upsample=settings.retry_upsample, scale=1.0, name="hog-upsampled")


def _cnn_factor(shape: tuple, settings: DetectionSettings) -> float:
    """Resize factor of the first CNN pass: about ``cnn_max_pixels`` pixels, enlarged by ``cnn_max_upscale`` at most.

    dlib's CNN finds faces from about 80 px wide; its cost grows with the pixels it scans. A crop of a
    face is shrunk to the pixel count (the face stays well over 80 px); a small still is enlarged up to
    ``cnn_max_upscale`` times, so 40 px faces reach the detector's size.
    """
    return min(settings.cnn_max_upscale, (settings.cnn_max_pixels / (shape[0] * shape[1])) ** 0.5)


def _cnn(models, pixels, settings):
    """Probe, when HOG found nothing: dlib's CNN (MMOD) detector on a copy of about ``cnn_max_pixels``."""
    return _cnn_at(models, pixels, _cnn_factor(pixels.shape, settings), "cnn")


def _cnn_upsampled(models, pixels, settings):
    """Probe, last resort: the CNN on a copy twice as large as the first pass's (faces half the size)."""
    return _cnn_at(models, pixels, 2 * _cnn_factor(pixels.shape, settings), "cnn-upsampled")


#: Name prefix of the probe stages that run the CNN on a rotated copy ("cnn-rotated+25").
ROTATED_STAGE = "cnn-rotated"


def rotated_stage_name(angle: float) -> str:
    return f"{ROTATED_STAGE}{angle:+g}"


def _rotated_factor(shape: tuple, settings: DetectionSettings) -> float:
    """Resize factor of the rotated CNN passes: about ``rotated_max_pixels``, enlarged ``rotated_max_upscale`` at most."""
    return min(settings.rotated_max_upscale, (settings.rotated_max_pixels / (shape[0] * shape[1])) ** 0.5)


def _turned_copy(pixels: np.ndarray, factor: float, angle: float):
    """``pixels`` resized by ``factor`` and turned ``angle`` degrees about the centre (edges replicated).

    Returns the turned copy (contiguous, for dlib and OpenCV's DNN), the affine map from it back to the
    resized copy, and the resize's x and y scales.
    """
    resized, sx, sy = resize_exact(pixels, factor)
    height, width = resized.shape[:2]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    rotated = cv2.warpAffine(resized, turn, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(rotated), cv2.invertAffineTransform(turn), sx, sy


def _cnn_rotated(angle: float):
    """Probe, when nothing upright was found: the CNN on a copy rotated by ``angle`` degrees.

    A camera high on a wall sees heads bowed and tilted: the face lies at 20-50 degrees in the frame,
    where dlib's detectors (trained on upright faces) miss it. Turned upright, most of these faces are
    found (docs/cctv-probes.md). Hits keep an :class:`UprightView` so landmarks are placed upright too.
    """
    def stage(models, pixels, settings):
        rotated, back, sx, sy = _turned_copy(pixels, _rotated_factor(pixels.shape, settings), angle)
        hits = models.cnn_detector(rotated, 0)
        return [_upright_detection(h.rect, back, angle, sx, sy, float(h.confidence)) for h in hits]

    return stage


def _upright_detection(rect, back: np.ndarray, angle: float, sx: float, sy: float,
                       confidence: float) -> Detection:
    """A hit in a rotated, resized copy as a detection in original pixels (pixel centres at integers)."""
    centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2, 1.0])
    x, y = back @ centre  # in the resized copy, before rotation
    in_copy = UprightView(float(angle), float(x), float(y), float(rect.right() - rect.left() + 1),
                          float(rect.bottom() - rect.top() + 1))
    view = in_copy.mapped(sx, sy)
    return Detection(upright_hull(view), rotated_stage_name(angle), confidence, upright=view)


def upright_hull(view: UprightView) -> FaceBox:
    """The axis-aligned box (original pixels) around a face box that stands upright in ``view``."""
    cos, sin = abs(np.cos(np.radians(view.angle))), abs(np.sin(np.radians(view.angle)))
    half_w = (view.width * cos + view.height * sin) / 2
    half_h = (view.width * sin + view.height * cos) / 2
    return FaceBox(int(round(view.cx + 0.5 - half_w)), int(round(view.cy + 0.5 - half_h)),
                   int(round(view.cx + 0.5 + half_w)), int(round(view.cy + 0.5 + half_h)))


MTCNN_STAGE = "mtcnn"
#: dlib's CNN box for a face MTCNN also finds is a square ~0.95 times the geometric mean of MTCNN's box
#: sides, about the same centre (213 faces found by both on the dev CCTV crops, docs/cctv-probes.md).
MTCNN_TO_DLIB_SIDE = 0.95


def _mtcnn_copies(shape: tuple, settings: DetectionSettings) -> list[tuple[float, float, int]]:
    """(resize factor, smallest face in the copy, interpolation) of MTCNN's passes over a probe.

    First a copy whose longer side is ``mtcnn_side`` px (a small still enlarged at most 3x, bicubic:
    a 40 px face becomes 100 px), searched from 15 px faces; then, unless it is about the same size,
    the probe itself (at most ``mtcnn_max_side`` px) from 12 px faces, for small faces in a large frame.
    """
    longer = max(shape[:2])
    first = min(3.0, settings.mtcnn_side / longer)
    copies = [(first, 15.0, cv2.INTER_CUBIC if first > 1 else cv2.INTER_AREA)]
    native = min(1.0, settings.mtcnn_max_side / longer)
    if not 1 / 1.3 < native / first < 1.3:
        copies.append((native, 12.0, cv2.INTER_AREA))
    return copies


def _mtcnn(models, pixels, settings):
    """Probe, when dlib's passes found nothing: MTCNN, which finds heads seen from above or the side.

    Its hits carry an :class:`UprightView` turned by the face's roll as its five landmarks give it, with
    a box the size dlib's CNN would draw, so dlib's shape predictor places the landmarks that align the
    face exactly as for dlib's own detections.
    """
    for factor, min_face, interpolation in _mtcnn_copies(pixels.shape, settings):
        resized, sx, sy = resize_exact(pixels, factor, interpolation=interpolation)
        faces = models.mtcnn.detect(resized, min_face=min_face, thresholds=settings.mtcnn_thresholds)
        if faces:
            return [_mtcnn_detection(face, sx, sy) for face in faces]
    return []


def mtcnn_roll(landmarks: np.ndarray) -> float:
    """The face's roll in degrees (clockwise on screen; OpenCV's rotation by this angle makes it upright).

    Two estimates from the five landmarks, weighted by their lengths: the line from eye to eye, and the
    axis from the eyes' midpoint down to the mouth's (the only one left when a profile's eyes overlap).
    """
    eyes = landmarks[1] - landmarks[0]
    axis = (landmarks[3] + landmarks[4]) / 2 - (landmarks[0] + landmarks[1]) / 2
    # the eye line points along (cos, sin) of the roll, the axis along (-sin, cos)
    cos = eyes[0] + axis[1]
    sin = eyes[1] - axis[0]
    return float(np.degrees(np.arctan2(sin, cos)))


def _mtcnn_detection(face, sx: float, sy: float) -> Detection:
    left, top, right, bottom = face.box
    side = float(MTCNN_TO_DLIB_SIDE * np.sqrt(max(right - left, 1e-3) * max(bottom - top, 1e-3)))
    in_copy = UprightView(mtcnn_roll(face.landmarks), (left + right) / 2 - 0.5, (top + bottom) / 2 - 0.5,
                          side, side)
    view = in_copy.mapped(sx, sy)
    box = FaceBox(int(round(left * sx)), int(round(top * sy)), int(round(right * sx)), int(round(bottom * sy)))
    return Detection(box, MTCNN_STAGE, face.score, upright=view)


#: Name prefix of the probe stages that run MTCNN on a turned copy ("mtcnn-rotated+30").
MTCNN_ROTATED_STAGE = "mtcnn-rotated"


def mtcnn_rotated_stage_name(angle: float) -> str:
    return f"{MTCNN_ROTATED_STAGE}{angle:+g}"


def _mtcnn_rotated_factor(shape: tuple, settings: DetectionSettings) -> float:
    """Resize factor of the turned MTCNN passes: the probe itself, shrunk to ``mtcnn_max_side`` px at most,
    and a still smaller than ``mtcnn_side`` enlarged to it (3x at most), as MTCNN's first copy: in a
    120 px head crop its native pass took hair and background for a 36 px face."""
    longer = max(shape[:2])
    if longer < settings.mtcnn_side:
        return min(3.0, settings.mtcnn_side / longer)
    return min(1.0, settings.mtcnn_max_side / longer)


def _mtcnn_rotated(angle: float):
    """Probe, when every other pass found nothing: MTCNN on a copy turned by ``angle`` degrees.

    In 352x288 field frames (FRMDB 025-039) most faces no stage finds are not small (50-120 px) but
    bowed and turned under a camera high on a wall (pitch and yaw, some roll). dlib's CNN on turned
    copies found none of them; MTCNN on a copy turned by 30 degrees either way found 5 of 22 (checked
    by eye) for ~0.05 s a pass (``mtcnn_rotation_angles``): the turn gives its 12 px proposal network
    another look at the head. The face's own roll, from MTCNN's landmarks in the turned copy, is added
    to the turn (for 030/Img_02 they cancel: the face is bowed, not rolled), so landmarks are placed on
    the face as it stands, as for the other stages. Faces under ``mtcnn_rotated_min_face`` px are not
    searched: the small hits were background (a cup, floor tiles).
    """
    def stage(models, pixels, settings):
        rotated, back, sx, sy = _turned_copy(pixels, _mtcnn_rotated_factor(pixels.shape, settings), angle)
        faces = models.mtcnn.detect(rotated, min_face=settings.mtcnn_rotated_min_face,
                                    thresholds=settings.mtcnn_thresholds)
        return [_mtcnn_rotated_detection(face, back, angle, sx, sy) for face in faces]

    return stage


def _mtcnn_rotated_detection(face, back: np.ndarray, angle: float, sx: float, sy: float) -> Detection:
    """An MTCNN face found in a turned, resized copy as a detection in original pixels."""
    left, top, right, bottom = face.box
    side = float(MTCNN_TO_DLIB_SIDE * np.sqrt(max(right - left, 1e-3) * max(bottom - top, 1e-3)))
    x, y = back @ np.array([(left + right) / 2 - 0.5, (top + bottom) / 2 - 0.5, 1.0])
    in_copy = UprightView(float(angle + mtcnn_roll(face.landmarks)), float(x), float(y), side, side)
    view = in_copy.mapped(sx, sy)
    return Detection(upright_hull(view), mtcnn_rotated_stage_name(angle), face.score, upright=view)


#: Name prefix of the probe stages that run MTCNN on a vertically stretched copy ("mtcnn-stretched1.25").
MTCNN_STRETCHED_STAGE = "mtcnn-stretched"


def mtcnn_stretched_stage_name(factor: float) -> str:
    return f"{MTCNN_STRETCHED_STAGE}{factor:g}"


def _mtcnn_stretched(stretch: float):
    """Probe, when every other MTCNN pass found nothing: MTCNN on a copy stretched vertically ``stretch`` times.

    A head bowed under a camera high on a wall shows its face foreshortened from top to bottom, which
    neither the upright nor the turned passes undo. On copies stretched by 1.25 and 1.5 MTCNN found 4 of
    the 17 faces no stage found in the lowres field frames (026/Img_05, 027/Img_05, 031/Img_05 and
    034/Img_02, each checked by eye) and the same faces among the crops, nothing else on either set
    (docs/cctv-probes.md). The copy is scaled as the turned passes' (a small still enlarged to
    ``mtcnn_side``); faces under ``mtcnn_rotated_min_face`` px are not searched. The face's box and
    landmarks are mapped back to original pixels, where dlib's landmarks then align it as it stands.
    """
    def stage(models, pixels, settings):
        factor = _mtcnn_rotated_factor(pixels.shape, settings)
        height, width = pixels.shape[:2]
        size = (max(1, round(width * factor)), max(1, round(height * factor * stretch)))
        copy = cv2.resize(pixels, size, interpolation=cv2.INTER_CUBIC if factor * stretch > 1 else cv2.INTER_AREA)
        sx, sy = width / size[0], height / size[1]
        faces = models.mtcnn.detect(np.ascontiguousarray(copy), min_face=settings.mtcnn_rotated_min_face,
                                    thresholds=settings.mtcnn_thresholds)
        found = []
        for face in faces:
            mapped = _mtcnn_detection(face, sx, sy)
            found.append(Detection(mapped.box, mtcnn_stretched_stage_name(stretch), mapped.confidence,
                                   upright=mapped.upright))
        return found

    return stage


#: The CNN detector's output stride in pixels of the image it scans (three stride-2 layers).
CNN_STRIDE = 8


def dlib_translated(rect, dx: int, dy: int):
    """A dlib rectangle moved by ``(dx, dy)`` pixels."""
    import dlib

    return dlib.rectangle(rect.left() + dx, rect.top() + dy, rect.right() + dx, rect.bottom() + dy)


def _cnn_at(models, pixels, factor: float, name: str) -> list[Detection]:
    resized, sx, sy = resize_exact(pixels, factor)
    hits = models.cnn_detector(resized, 0)
    return [Detection(_mapped_box(h.rect, sx, sy), name, float(h.confidence)) for h in hits]


def resize_exact(pixels: np.ndarray, factor: float, *, interpolation: int | None = None
                 ) -> tuple[np.ndarray, float, float]:
    """``pixels`` resized by about ``factor``, with the exact per-axis factors to map coordinates back.

    Returns ``(resized, sx, sy)``: a contiguous ``(h', w', 3)`` copy (area interpolation when
    shrinking, bilinear when enlarging, unless ``interpolation`` says otherwise) and ``sx = W / w'``, ``sy = H / h'`` so that a point ``(x, y)``
    of the copy is ``(x * sx, y * sy)`` in the original (pixel edges, not centres).
    """
    height, width = pixels.shape[:2]
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    if (new_w, new_h) == (width, height):
        return np.ascontiguousarray(pixels), 1.0, 1.0
    if interpolation is None:
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    resized = np.ascontiguousarray(cv2.resize(pixels, (new_w, new_h), interpolation=interpolation))
    return resized, width / new_w, height / new_h


def _mapped_box(rect, sx: float, sy: float) -> FaceBox:
    return FaceBox(int(round(rect.left() * sx)), int(round(rect.top() * sy)),
                   int(round((rect.right() + 1) * sx)), int(round((rect.bottom() + 1) * sy)))


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
