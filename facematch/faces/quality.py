"""Face image quality: how much a face image can be trusted for recognition (after ISO/IEC 29794-5).

The components follow ISO/IEC 29794-5 and its reference implementation OFIQ, restricted to what OpenCV
and NumPy can measure from a face box and dlib landmarks (inter-eye distance, face size, sharpness,
under- and over-exposure, dynamic range, head pose), plus one learned component standing in for
OFIQ's network-based ones: the score of dlib's HOG frontal-face detector on the face. Each component
becomes a *utility* in 0..1, and the unified score combines them with one monotone rule
(``_unified_score``):

    score = 100 * min(u_resolution, u_sharpness) * u_dynamic_range * min(u_pose, u_frontal)

that is, three independent ways to lose information (too little detail, bad light, a bad view)
multiplied, each group scored by its worse symptom: sharpness, measured at a fixed crop size, already
falls for small faces (lost resolution reads as blur), and the landmark pose and the detector's
frontal-face score see the same view, so multiplying within a group would count a defect twice.
100 is an ideal image and 0 an unusable one, as in OFIQ; the score never rises when any single
component gets worse. The under- and over-exposure fractions are reported and warned about but not
scored: they did not predict dlib's error beyond what dynamic range does (a face darkened
to 10% brightness has every pixel "under-exposed" yet still moved the descriptor only 0.34).

The utility curves are calibrated on dlib's face descriptor, the model this project uses: on 12 frontal
FRMDB mugshots, a degradation that moves the descriptor of the same image by ``d`` (in descriptor
distance; dlib's match threshold is 0.6, other people lie near 0.7) is given the utility ``1 - d/0.6``,
approximately. Measured (median): face box 40 px wide d = 0.19, 30 px d = 0.28, 18 px d = 0.45;
Gaussian blur with sigma 2% of the face width d = 0.29, 5% d = 0.55; brightness x0.2 d = 0.24,
x0.05 d = 0.56, x1.5 d = 0.33, x2 d = 0.52. A score of 50 therefore means "a good image of this
person would have moved about 0.25 towards the threshold": expect misses. Over those degradations the
score's rank correlation with ``d`` is -0.95 (Spearman, 12 subjects x 15 variants).

The frontal-face component matters on real surveillance images. On the 116 FRMDB CCTV crops where
dlib's CNN detector finds a face, the pixel and landmark components alone did not predict recognition
(rank correlation with the distance to the person's frontal mugshot 0.02): dlib places its 68 points
on a frontal template even on a profile or the top of a head, so the landmark pose reads "frontal".
The HOG detector's score on the face correlates at -0.69 by itself, and the unified score at -0.60;
probes under the default warning threshold were ranked first among 28 people 34% of the time (85
probes), the others 94% (31 probes).

Head pose comes from the 2-D landmarks with a small orthographic face model (see ``_pose_68``): on the
FRMDB mugshots (known camera angles) it measured yaw to 6.4 degrees and pitch to 4-5 degrees (mean
absolute error of per-subject differences to the frontal view), better than ``cv2.solvePnP`` with a
generic six-point 3-D model (9-10 degrees, and sign flips without a careful initial guess).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from facematch.errors import InvalidArgument, InvalidBox
from facematch.faces.models import frontal_face_detector
from facematch.settings import QualitySettings
from facematch.types import FaceBox

log = logging.getLogger(__name__)

__all__ = ["QualitySettings", "FaceQuality", "assess_quality", "is_fit_for_enrolment", "probe_warning"]

_OPTIONAL_FIELDS = ("warnings", "frontal_face_score")  # FaceQuality.from_dict accepts records without them

# --- constants of the scoring rule (measured on FRMDB with dlib, see the module docstring) ---------
_DARK_MAX = 25          # luminance 0..25 counts as under-exposed (OFIQ's UnderExposurePrevention range)
_BRIGHT_MIN = 247       # luminance 247..255 counts as over-exposed (OFIQ's OverExposurePrevention range)
_SHARP_CROP_PX = 64     # sharpness is measured on the face box resampled to this width
_SHARP_IDEAL = 0.11     # sharpness at or above this: utility 1 (about the 10th percentile of sharp mugshots)
_SHARP_ZERO = 0.015     # sharpness at or below this: utility 0 (blur sigma ~5% of the face width)
_IED_FULL_PX = 50.0     # more pixels stop helping here: dlib's 150-px face chip holds the eyes ~52 px apart
_IED_ZERO_PX = 4.0      # inter-eye distance at which the face is beyond use
_ENTROPY_FULL_BITS = 6.5  # luminance entropy at or above this: utility 1 (mugshots ~6.9, CCTV ~6.5)
_ENTROPY_ZERO_BITS = 2.0  # entropy at or below this: utility 0 (brightness x0.05 gives ~2.5, x2 ~2)
_FRONTAL_FACE_PX = 100  # the face is resampled to this width before dlib's HOG detector scores it
_FRONTAL_NONE = -1.0    # score recorded when the detector finds nothing there (its adjust_threshold)
_FRONTAL_ZERO = -0.5    # frontal-face score at or below this: lowest utility
_FRONTAL_FULL = 1.2     # ...at or above this: utility 1 (most frontal mugshots)
_FRONTAL_FLOOR = 0.2    # lowest frontal-face utility: a third of such CCTV faces were still recognised
_CLIPPED_WARN = 0.25    # warn when a quarter of the face is under- or over-exposed
_TURNED_DEG = 20.0      # |yaw| or |pitch| from which a pose warning is given
_STRONGLY_TURNED_DEG = 45.0

# Orthographic face model for the 68-point pose (in units of the inter-eye distance; fitted on FRMDB):
_NOSE_DEPTH_68 = 0.55   # nose tip ahead of the eye centres: nose offset / IED = 0.55 * tan(yaw)
_NOSE_RATIO_68 = 0.56   # frontal (nose tip - eye line) / (mouth - eye line), vertical
_NOSE_PITCH_68 = 0.50   # that ratio changes by 0.5 * tan(pitch)
# ...and for the 5-point layout (nose base instead of nose tip; eye corners for pitch):
_NOSE_DEPTH_5 = 0.39
_CANTHAL_TILT_5 = 0.02  # frontal (inner - outer eye corner) height / IED
_CANTHAL_PITCH_5 = 0.07  # ...changes by 0.07 * tan(pitch)


@dataclass(frozen=True)
class FaceQuality:
    """Quality components of one face, and the unified score.

    ``inter_eye_px``: distance between the eye centres, original-image pixels.
    ``face_width_px``/``face_height_px``: the face box, original-image pixels.
    ``sharpness``: RMS response of the 3x3 Laplacian of luminance over the face region, after resampling
    the face box to 64 px wide, divided by the region's mean luminance (dimensionless; sharp mugshots
    0.10-0.16, blurred faces under 0.04). Small faces are upsampled, so lost resolution reads as blur.
    ``under_exposure``/``over_exposure``: fraction (0..1) of face-region pixels with luminance <= 25 or
    >= 247 (0..255 scale).
    ``dynamic_range``: entropy of the face region's 256-bin luminance histogram, bits (0..8).
    ``yaw_deg``: signed; positive when the face points towards the image's right (the subject turns to
    their own left), as FRMDB's horizontal angle (Img_43 is +45).
    ``pitch_deg``: signed; positive when the face is seen from above (it appears to look down), as
    FRMDB's vertical angle (Img_32, camera 30 degrees above, is +30) and typical of CCTV.
    Both angles are read from the landmarks and are meaningless when ``frontal_face_score`` is near -1
    (beyond about 60 degrees dlib still fits a frontal template; a profile may read as yaw 0).
    ``detector_confidence``: as reported by the detector (its own units), kept but not scored.
    ``score``: unified quality 0..100 (0 unusable, 100 ideal); ``warnings``: short human phrases.
    ``frontal_face_score``: the score dlib's HOG frontal-face detector gives this face once resampled
    to 100 px wide (detector margin units: frontal mugshots 1.2-2, 45-degree views ~1, seen from 30
    degrees above ~0.4; -1 when it finds no face there). None in records made before it existed.
    The face region is the landmarks' hull (jaw and brows) for 68 points, an ellipse placed from 5 points.
    """

    inter_eye_px: float
    face_width_px: int
    face_height_px: int
    sharpness: float
    under_exposure: float
    over_exposure: float
    dynamic_range: float
    yaw_deg: float
    pitch_deg: float
    detector_confidence: float | None
    score: float
    warnings: tuple[str, ...] = ()
    frontal_face_score: float | None = None

    def to_dict(self) -> dict:
        """A JSON-safe dict (floats, ints, None and a list of strings)."""
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "FaceQuality":
        """The inverse of ``to_dict``. Raises ``InvalidArgument`` when a field is missing."""
        missing = [f.name for f in fields(cls) if f.name not in d and f.name not in _OPTIONAL_FIELDS]
        if missing:
            raise InvalidArgument(f"quality record lacks {', '.join(missing)}")
        conf, frontal = d["detector_confidence"], d.get("frontal_face_score")
        return cls(
            inter_eye_px=float(d["inter_eye_px"]),
            face_width_px=int(d["face_width_px"]),
            face_height_px=int(d["face_height_px"]),
            sharpness=float(d["sharpness"]),
            under_exposure=float(d["under_exposure"]),
            over_exposure=float(d["over_exposure"]),
            dynamic_range=float(d["dynamic_range"]),
            yaw_deg=float(d["yaw_deg"]),
            pitch_deg=float(d["pitch_deg"]),
            detector_confidence=None if conf is None else float(conf),
            score=float(d["score"]),
            warnings=tuple(str(w) for w in d.get("warnings", ())),
            frontal_face_score=None if frontal is None else float(frontal),
        )


def assess_quality(
    pixels: np.ndarray,
    box: FaceBox,
    landmarks: np.ndarray,
    *,
    detector_confidence: float | None = None,
    settings: QualitySettings = QualitySettings(),
) -> FaceQuality:
    """Measure the quality of one face.

    Parameters: ``pixels`` ``(H, W, 3) uint8`` RGB, the original image; ``box`` the face box in its
    pixel coordinates (may extend past the border; it is clipped); ``landmarks`` ``(68, 2)`` or
    ``(5, 2)`` float (x, y) in the same coordinates, dlib's 68- or 5-point layout (with 5 points the
    pose is coarser: pitch from the eye corners alone); ``detector_confidence`` stored as given;
    ``settings`` the warning thresholds. Returns a ``FaceQuality``. Besides array arithmetic it runs
    dlib's HOG frontal-face detector once on the face (about 20 ms; the detector is built on first use).

    Raises ``InvalidArgument`` for malformed pixels or landmarks, ``InvalidBox`` when the box does not
    overlap the image.
    """
    pixels, landmarks = _check_inputs(pixels, landmarks)
    height, width = pixels.shape[:2]
    inside = box.clipped(width, height)
    if inside.width <= 0 or inside.height <= 0:
        raise InvalidBox(f"face box {box.as_xywh()} does not overlap the {width}x{height} image")
    luma = cv2.cvtColor(pixels[inside.top:inside.bottom, inside.left:inside.right], cv2.COLOR_RGB2GRAY)
    offset = np.array([inside.left, inside.top], np.float32)
    mask = _face_mask(luma.shape, landmarks - offset)
    values = luma[mask]
    inter_eye, yaw, pitch = _eyes_and_pose(landmarks)
    sharpness = _sharpness(luma, mask)
    frontal = _frontal_face_score(pixels, inside)
    q = dict(
        inter_eye_px=inter_eye,
        face_width_px=int(box.width),
        face_height_px=int(box.height),
        sharpness=sharpness,
        under_exposure=float(np.mean(values <= _DARK_MAX)),
        over_exposure=float(np.mean(values >= _BRIGHT_MIN)),
        dynamic_range=_entropy_bits(values),
        yaw_deg=yaw,
        pitch_deg=pitch,
        frontal_face_score=frontal,
    )
    utilities = _utilities(**q)
    score = _unified_score(utilities)
    warnings = _warnings(q, utilities, float(values.mean()), settings)
    conf = None if detector_confidence is None else float(detector_confidence)
    log.debug("quality %.1f for box %s (%s)", score, box.as_xywh(), ", ".join(warnings) or "no warnings")
    return FaceQuality(**q, detector_confidence=conf, score=score, warnings=warnings)


def is_fit_for_enrolment(
    q: FaceQuality, settings: QualitySettings = QualitySettings()
) -> tuple[bool, tuple[str, ...]]:
    """Whether a custody face is good enough to enrol, and if not, why (short human reasons).

    Unfit when the face or the inter-eye distance is below the settings' minimum, or the score is
    below ``enrol_min_score``. Returns ``(True, ())`` when fit.
    """
    reasons: list[str] = []
    if q.face_width_px < settings.min_face_px:
        reasons.append(f"face only {q.face_width_px} px wide (minimum {settings.min_face_px})")
    if q.inter_eye_px < settings.min_inter_eye_px:
        reasons.append(f"eyes only {q.inter_eye_px:.0f} px apart (minimum {settings.min_inter_eye_px:.0f})")
    if q.score < settings.enrol_min_score:
        reasons.append(f"quality score {q.score:.0f} below {settings.enrol_min_score:.0f}")
        reasons.extend(w for w in q.warnings if not w.startswith(("face only", "eyes only")))
    return (not reasons, tuple(reasons))


def probe_warning(q: FaceQuality, settings: QualitySettings = QualitySettings()) -> str | None:
    """The one-line warning shown with every search on this probe face, or None when it is good enough.

    Given when the score is below ``probe_warn_score`` or the face is narrower than ``min_face_px``,
    e.g. "low quality probe (score 23/100: face only 24 px wide; blurred): expect misses and false
    candidates". (A small inter-eye distance alone does not warn: its cost is in the score.)
    """
    if q.score >= settings.probe_warn_score and q.face_width_px >= settings.min_face_px:
        return None
    details = "; ".join(q.warnings[:3])
    why = f"score {q.score:.0f}/100" + (f": {details}" if details else "")
    return f"low quality probe ({why}): expect misses and false candidates"


# --- measurement (pure functions over arrays) --------------------------------------------------------


def _check_inputs(pixels: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8 or 0 in pixels.shape:
        raise InvalidArgument(f"pixels must be a non-empty (H, W, 3) uint8 RGB array, got "
                              f"{pixels.shape} {pixels.dtype}")
    points = np.asarray(landmarks, dtype=np.float32)
    if points.shape not in ((68, 2), (5, 2)) or not np.all(np.isfinite(points)):
        raise InvalidArgument(f"landmarks must be finite (68, 2) or (5, 2) (x, y), got {points.shape}")
    return np.ascontiguousarray(pixels), points


def _face_mask(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """Boolean ``shape`` mask of the face region; ``points`` in the mask's coordinates.

    68 points: convex hull of the jaw line and brows (0..26): skin, without hair or background.
    5 points: an ellipse placed from the eyes and nose base to cover about the same region (fitted
    to the 68-point hull on FRMDB; it widens and shifts away from the nose as the head turns). Falls
    back to the whole crop when the region covers fewer than 16 pixels (tiny faces, landmarks off
    the image).
    """
    mask = np.zeros(shape, np.uint8)
    if len(points) == 68:
        hull = cv2.convexHull(np.round(points[:27]).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1)
    else:
        left, right = points[2:4].mean(axis=0), points[0:2].mean(axis=0)
        inter_eye = float(np.hypot(*(right - left)))
        if inter_eye >= 1.0:
            nose = float(_eye_frame(points, left, right, inter_eye)[4, 0])  # nose base offset, IED units
            dx, dy = (right - left) / inter_eye
            cx, cy = -1.4 * nose, 0.7 + 0.75 * abs(nose)
            centre = (left + right) / 2 + inter_eye * np.array([cx * dx - cy * dy, cx * dy + cy * dx])
            size = (1.8 * inter_eye * (1.1 + 1.1 * abs(nose)), 1.8 * inter_eye * (1.15 + 0.75 * abs(nose)))
            ellipse = (tuple(float(v) for v in centre), size, math.degrees(math.atan2(dy, dx)))  # full axes
            cv2.ellipse(mask, ellipse, 1, thickness=-1)
    if int(mask.sum()) < 16:
        return np.ones(shape, bool)
    return mask.astype(bool)


def _sharpness(luma: np.ndarray, mask: np.ndarray) -> float:
    """RMS 3x3 Laplacian over the mask at ``_SHARP_CROP_PX`` width, over mean luminance (see FaceQuality)."""
    h, w = luma.shape
    new_w, new_h = _SHARP_CROP_PX, max(3, int(round(h * _SHARP_CROP_PX / w)))
    shrink = w > new_w
    resized = cv2.resize(luma, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    small_mask = cv2.resize(mask.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    inner = cv2.erode(small_mask, np.ones((3, 3), np.uint8)).astype(bool)  # keep the mask edge out
    if inner.sum() < 9:
        inner = np.ones_like(inner, bool)
    response = cv2.Laplacian(resized.astype(np.float32), cv2.CV_32F, ksize=1)[inner]
    mean = float(resized[inner].mean())
    return float(response.std() / max(mean, 1.0))


def _entropy_bits(values: np.ndarray) -> float:
    """Shannon entropy (bits) of the 256-bin histogram of ``values`` (uint8)."""
    p = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log2(p)).sum())


@functools.lru_cache(maxsize=1)
def _hog_detector():
    """dlib's HOG frontal-face detector, built on first use (once per process), with a lock."""
    return frontal_face_detector(), threading.Lock()


def _frontal_face_score(pixels: np.ndarray, box: FaceBox) -> float:
    """dlib's HOG frontal-face score for the face in ``box`` (clipped, original pixels).

    The box plus half its size on each side is resampled so the face is ``_FRONTAL_FACE_PX`` wide
    (above the detector's 80-px window), then scanned once without upsampling; the best detection
    containing the box centre counts, ``_FRONTAL_NONE`` when there is none. Cost ~20 ms. Unlike the
    landmark pose, this does not trust the landmarks, which dlib places on a full frontal template even
    on a profile or the top of a head.
    """
    height, width = pixels.shape[:2]
    margin = max(box.width, box.height) // 2
    region = FaceBox(box.left - margin, box.top - margin, box.right + margin, box.bottom + margin)
    region = region.clipped(width, height)
    f = _FRONTAL_FACE_PX / max(box.width, 1)
    crop = pixels[region.top:region.bottom, region.left:region.right]
    size = (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f)))
    crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    cx = ((box.left + box.right) / 2 - region.left) * f
    cy = ((box.top + box.bottom) / 2 - region.top) * f
    detector, lock = _hog_detector()
    with lock:
        rects, scores, _ = detector.run(np.ascontiguousarray(crop), 0, _FRONTAL_NONE)
    here = [sc for r, sc in zip(rects, scores) if r.left() <= cx <= r.right() and r.top() <= cy <= r.bottom()]
    return float(max(here, default=_FRONTAL_NONE))


def _eyes_and_pose(points: np.ndarray) -> tuple[float, float, float]:
    """``(inter_eye_px, yaw_deg, pitch_deg)`` from 68 or 5 landmarks (sign conventions: FaceQuality)."""
    if len(points) == 68:
        left, right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    else:  # dlib 5-point: 0/1 outer/inner corner of the image-right eye, 2/3 of the image-left eye
        left, right = points[2:4].mean(axis=0), points[0:2].mean(axis=0)
    inter_eye = float(np.hypot(*(right - left)))
    if inter_eye < 1.0:
        return inter_eye, 0.0, 0.0
    frame = _eye_frame(points, left, right, inter_eye)
    yaw, pitch = _pose_68(frame) if len(points) == 68 else _pose_5(frame)
    return inter_eye, yaw, pitch


def _eye_frame(points: np.ndarray, left: np.ndarray, right: np.ndarray, inter_eye: float) -> np.ndarray:
    """Landmarks moved so the eye midpoint is 0 and the eye line is +x (roll removed), in inter-eye units."""
    dx, dy = (right - left) / inter_eye
    rotation = np.array([[dx, dy], [-dy, dx]], np.float64)
    return ((points - (left + right) / 2) @ rotation.T) / inter_eye


def _pose_68(p: np.ndarray) -> tuple[float, float]:
    """Yaw and pitch (degrees) from a 68-point eye frame, orthographic face model.

    Yaw: the nose tip (30) lies ``_NOSE_DEPTH_68`` inter-eye distances in front of the eyes, so its
    sideways offset is that times tan(yaw). Pitch: the nose tip's height between the eye line and the
    mouth corners (48, 54) is a ratio that does not depend on yaw or scale; seen from above the nose
    tip drops towards the mouth.
    """
    yaw = math.degrees(math.atan(p[30, 0] / _NOSE_DEPTH_68))
    mouth = (p[48, 1] + p[54, 1]) / 2
    if mouth <= 0.05:  # degenerate landmarks: mouth on the eye line
        return yaw, 0.0
    pitch = math.degrees(math.atan((p[30, 1] / mouth - _NOSE_RATIO_68) / _NOSE_PITCH_68))
    return yaw, pitch


def _pose_5(p: np.ndarray) -> tuple[float, float]:
    """Yaw and pitch (degrees) from a 5-point eye frame; coarser than ``_pose_68``.

    Yaw from the nose base (4) as in ``_pose_68``. Pitch from the eye corners: the outer corners lie
    deeper than the inner ones, so seen from above the inner corners drop below the outer ones. The
    nose-base height is not used: it barely changes between eye level and 30 degrees above.
    """
    yaw = math.degrees(math.atan(p[4, 0] / _NOSE_DEPTH_5))
    tilt = ((p[1, 1] - p[0, 1]) + (p[3, 1] - p[2, 1])) / 2
    pitch = math.degrees(math.atan((tilt - _CANTHAL_TILT_5) / _CANTHAL_PITCH_5))
    return yaw, pitch


# --- scoring -------------------------------------------------------------------------------------------


def _ramp(value: float, zero: float, full: float, *, log: bool = False) -> float:
    """0 at ``zero``, 1 at ``full``, linear (or linear in log) between, clipped."""
    if log:
        value, zero, full = (math.log(max(v, 1e-9)) for v in (value, zero, full))
    return float(min(1.0, max(0.0, (value - zero) / (full - zero))))


def _utilities(*, inter_eye_px, sharpness, dynamic_range, yaw_deg, pitch_deg, frontal_face_score,
               **_) -> dict[str, float]:
    """Per-component utilities in 0..1 (1 = no loss), each monotone in its component."""
    return {
        "resolution": _ramp(inter_eye_px, _IED_ZERO_PX, _IED_FULL_PX, log=True),
        "sharpness": _ramp(sharpness, _SHARP_ZERO, _SHARP_IDEAL, log=True),
        "dynamic_range": _ramp(dynamic_range, _ENTROPY_ZERO_BITS, _ENTROPY_FULL_BITS),
        # cos, not OFIQ's cos^2: on FRMDB a 45-degree view moved dlib's descriptor modestly
        "pose": max(0.0, math.cos(math.radians(yaw_deg))) * max(0.0, math.cos(math.radians(pitch_deg))),
        "frontal": _FRONTAL_FLOOR + (1 - _FRONTAL_FLOOR) * _ramp(
            frontal_face_score, _FRONTAL_ZERO, _FRONTAL_FULL),
    }


def _unified_score(u: dict[str, float]) -> float:
    """100 x detail x light x view (module docstring), rounded to 0.1."""
    detail = min(u["resolution"], u["sharpness"])
    view = min(u["pose"], u["frontal"])
    return round(100.0 * detail * u["dynamic_range"] * view, 1)


def _warnings(q: dict, u: dict[str, float], mean_luma: float, settings: QualitySettings) -> tuple[str, ...]:
    """Short human phrases for what is wrong, worst-first within each kind."""
    out: list[str] = []
    if q["face_width_px"] < settings.min_face_px:
        out.append(f"face only {q['face_width_px']} px wide")
    elif q["inter_eye_px"] < settings.min_inter_eye_px:
        out.append(f"eyes only {q['inter_eye_px']:.0f} px apart")
    if u["sharpness"] < 0.5 and u["sharpness"] < u["resolution"]:
        out.append("blurred")
    yaw, pitch = q["yaw_deg"], q["pitch_deg"]
    if q["frontal_face_score"] <= _FRONTAL_ZERO:  # the landmarks, hence yaw and pitch, are not to be trusted
        out.append("no frontal view (profile, from above or hidden?)")
    else:
        if abs(yaw) >= _TURNED_DEG:
            strength = "strongly turned" if abs(yaw) >= _STRONGLY_TURNED_DEG else "turned"
            out.append(f"{strength} (yaw {yaw:+.0f}°)")
        if abs(pitch) >= _TURNED_DEG:
            out.append(f"seen from {'above' if pitch > 0 else 'below'} (pitch {pitch:+.0f}°)")
        if u["frontal"] < 0.5 and max(abs(yaw), abs(pitch)) < _TURNED_DEG:
            out.append("not clearly frontal")
    dull = u["dynamic_range"] < 0.7
    if q["under_exposure"] >= _CLIPPED_WARN or (dull and mean_luma < 100):
        out.append("under-exposed")
    elif q["over_exposure"] >= _CLIPPED_WARN or (dull and mean_luma > 155):
        out.append("over-exposed")
    elif dull:
        out.append("low contrast")
    return tuple(out)
