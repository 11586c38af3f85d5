"""Face image quality on real faces: degradations lower the score, pose angles match FRMDB's rig."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import require_data
from PIL import Image

from facematch.errors import InvalidArgument, InvalidBox
from facematch.faces.quality import (
    FaceQuality,
    QualitySettings,
    assess_quality,
    is_fit_for_enrolment,
    probe_warning,
)
from facematch.types import FaceBox

# Subjects whose eye-level views dlib finds and whose "frontal" really faces the camera (055 and 058
# turned their heads for Img_33, so their frontal yaw is -36 and -29 degrees).
SUBJECTS = ["040", "042", "043", "044"]


class _Dlib:
    """dlib's HOG detector and landmark predictors, loaded once for this module."""

    def __init__(self):
        import dlib
        import face_recognition_models as frm

        self.detector = dlib.get_frontal_face_detector()
        self.p68 = dlib.shape_predictor(frm.pose_predictor_model_location())
        self.p5 = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._rect = dlib.rectangle

    def find(self, pixels: np.ndarray, upsample: int = 1) -> tuple[FaceBox, float] | None:
        """The largest face: its box and detector score, or None."""
        rects, scores, _ = self.detector.run(pixels, upsample, 0.0)
        if not rects:
            return None
        i = int(np.argmax([r.area() for r in rects]))
        r = rects[i]
        return FaceBox(r.left(), r.top(), r.right(), r.bottom()), float(scores[i])

    def landmarks(self, pixels: np.ndarray, box: FaceBox, points: int = 68) -> np.ndarray:
        """``(points, 2) float32`` (x, y), as the pipeline passes them."""
        predictor = self.p68 if points == 68 else self.p5
        shape = predictor(pixels, self._rect(box.left, box.top, box.right, box.bottom))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)

    def assess(self, pixels: np.ndarray, box: FaceBox | None = None, points: int = 68) -> FaceQuality:
        """Quality of the largest face (or of the face in ``box``, landmarked there)."""
        confidence = None
        if box is None:
            found = self.find(pixels)
            assert found is not None, "dlib found no face in a test image it used to find"
            box, confidence = found
        points = self.landmarks(pixels, box, points)
        return assess_quality(pixels, box, points, detector_confidence=confidence)


@pytest.fixture(scope="module")
def dl() -> _Dlib:
    return _Dlib()


def mugshot(subject: str, view: str) -> np.ndarray:
    path = require_data("frmdb-dev", "mugshots", subject, f"{view}.jpg")
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def frontal(dl):
    """Subject 040's frontal mugshot, its face box and its quality."""
    pixels = mugshot("040", "Img_33")
    box, _ = dl.find(pixels)
    return pixels, box, dl.assess(pixels, box)


def test_frontal_mugshot_is_good(frontal):
    _, box, q = frontal
    assert q.score >= 80
    assert q.warnings == ()
    assert q.inter_eye_px > 60 and q.face_width_px == box.width
    assert abs(q.yaw_deg) < 15 and abs(q.pitch_deg) < 15
    assert q.frontal_face_score > 1.0
    assert probe_warning(q) is None
    assert is_fit_for_enrolment(q) == (True, ())


def test_blur_lowers_score_step_by_step(dl, frontal):
    pixels, box, q = frontal
    scores = [q.score]
    for fraction in (0.01, 0.02, 0.04):  # Gaussian sigma as a fraction of the face width
        blurred = cv2.GaussianBlur(pixels, (0, 0), fraction * box.width)
        scores.append(dl.assess(blurred, box).score)
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 4, scores
    worst = dl.assess(cv2.GaussianBlur(pixels, (0, 0), 0.04 * box.width), box)
    assert "blurred" in worst.warnings
    assert probe_warning(worst).startswith("low quality probe (score")
    fit, reasons = is_fit_for_enrolment(worst)
    assert not fit and "blurred" in reasons


def test_darkening_lowers_score(dl, frontal):
    pixels, box, q = frontal
    dark = dl.assess((pixels * 0.12).astype(np.uint8), box)
    assert dark.score < q.score - 30
    assert dark.dynamic_range < q.dynamic_range - 2
    assert dark.under_exposure > 0.5
    assert "under-exposed" in dark.warnings


def test_downscaled_face_is_flagged(dl, frontal):
    pixels, box, q = frontal
    f = 25 / box.width
    small = cv2.resize(pixels, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    small_box = FaceBox(*(int(round(v * f)) for v in (box.left, box.top, box.right, box.bottom)))
    tiny = dl.assess(small, small_box)
    assert tiny.score < 50 < q.score
    assert tiny.face_width_px == small_box.width
    assert tiny.inter_eye_px == pytest.approx(q.inter_eye_px * f, rel=0.2)
    assert f"face only {small_box.width} px wide" in tiny.warnings
    assert "blurred" not in tiny.warnings  # its loss of detail is explained by its size
    assert probe_warning(tiny) is not None
    fit, reasons = is_fit_for_enrolment(tiny)
    assert not fit and any(r.startswith("face only") for r in reasons)


def test_yaw_follows_the_rig(dl):
    """Img_23 / Img_33 / Img_43: camera at -45, 0, +45 degrees; yaw sign as FRMDB's."""
    for subject in SUBJECTS:
        yaw = {view: dl.assess(mugshot(subject, view)).yaw_deg for view in ("Img_23", "Img_33", "Img_43")}
        assert yaw["Img_23"] < -25 and yaw["Img_43"] > 25, (subject, yaw)
        assert yaw["Img_23"] + 25 < yaw["Img_33"] < yaw["Img_43"] - 25, (subject, yaw)
        assert abs(yaw["Img_33"]) < 15, (subject, yaw)


def test_mirrored_face_mirrors_yaw(dl):
    pixels = mugshot("042", "Img_43")
    turned, mirrored = dl.assess(pixels), dl.assess(np.ascontiguousarray(pixels[:, ::-1]))
    assert turned.yaw_deg > 25
    assert mirrored.yaw_deg == pytest.approx(-turned.yaw_deg, abs=10)
    assert any(w.startswith("strongly turned (yaw") or w.startswith("turned (yaw") for w in turned.warnings)


def test_profile_is_not_trusted_to_its_landmarks(dl):
    """Profiles (Img_13, Img_53: -90 and +90 degrees) landmarked in the frontal view's box, as a CNN
    detection would be: dlib still fits a frontal template, but the frontal-face score sees no face."""
    for subject in ("042", "043"):
        box, _ = dl.find(mugshot(subject, "Img_33"))
        for view in ("Img_13", "Img_53"):
            q = dl.assess(mugshot(subject, view), box)
            assert q.frontal_face_score < 0, (subject, view, q)
            assert q.score <= 25, (subject, view, q)
            assert "no frontal view (profile, from above or hidden?)" in q.warnings
            assert probe_warning(q) is not None
            fit, reasons = is_fit_for_enrolment(q)
            assert not fit and "no frontal view (profile, from above or hidden?)" in reasons


def test_pitch_follows_the_rig(dl):
    """Img_32 / Img_33 / Img_34: camera 30 degrees above, level, 30 degrees below (positive = from above)."""
    for subject in ("043", "044"):
        pitch = {view: dl.assess(mugshot(subject, view)).pitch_deg for view in ("Img_32", "Img_33", "Img_34")}
        assert pitch["Img_32"] > 15 and pitch["Img_34"] < -15, (subject, pitch)
        assert pitch["Img_32"] - 15 > pitch["Img_33"] > pitch["Img_34"] + 15, (subject, pitch)


def test_cctv_probes_score_below_their_mugshots(dl):
    """Real surveillance crops (where dlib finds a face) score lower than the same people's mugshots."""
    cctv, frontal = [], []
    for subject in ("042", "044", "045", "048"):
        frontal.append(dl.assess(mugshot(subject, "Img_33")).score)
        for camera in range(1, 6):
            path = require_data("frmdb-dev", "cctv_crops", subject, f"Img_0{camera}.jpg")
            pixels = np.asarray(Image.open(path).convert("RGB"))
            found = dl.find(pixels)
            if found is not None:
                cctv.append(assess_quality(pixels, found[0], dl.landmarks(pixels, found[0])).score)
    assert len(cctv) >= 6, "dlib found too few faces in the CCTV crops to compare"
    assert np.mean(cctv) < np.mean(frontal) - 5, (cctv, frontal)
    assert min(cctv) < min(frontal)


def test_five_point_landmarks_agree_with_68(dl):
    for subject in ("040", "043"):
        for view, sign in (("Img_23", -1), ("Img_33", 0), ("Img_43", 1)):
            pixels = mugshot(subject, view)
            box, _ = dl.find(pixels)
            q68, q5 = dl.assess(pixels, box, 68), dl.assess(pixels, box, 5)
            # eye centres from 2 corners (5 points) or 6 contour points (68) part as the head turns
            assert q5.inter_eye_px == pytest.approx(q68.inter_eye_px, rel=0.3 if sign else 0.1)
            assert q5.score == pytest.approx(q68.score, abs=20), (subject, view, q5, q68)
            if sign:
                assert sign * q5.yaw_deg > 25, (subject, view, q5.yaw_deg)
            else:
                assert abs(q5.yaw_deg) < 15 and q5.score > 70, (subject, view, q5)


def test_round_trip_through_json(frontal, dl):
    pixels, box, _ = frontal
    q = dl.assess(cv2.GaussianBlur(pixels, (0, 0), 6), box)
    q = FaceQuality(**{**q.to_dict(), "warnings": q.warnings, "detector_confidence": 1.25})
    text = json.dumps(q.to_dict())
    again = FaceQuality.from_dict(json.loads(text))
    assert again == q
    assert isinstance(again.warnings, tuple)
    with pytest.raises(InvalidArgument, match="lacks score"):
        FaceQuality.from_dict({k: v for k, v in q.to_dict().items() if k != "score"})
    older = FaceQuality.from_dict({k: v for k, v in q.to_dict().items() if k != "frontal_face_score"})
    assert older.frontal_face_score is None and older.score == q.score


def test_detector_confidence_is_kept_not_scored(dl, frontal):
    pixels, box, q = frontal
    points = dl.landmarks(pixels, box)
    low = assess_quality(pixels, box, points, detector_confidence=-0.4)
    assert low.detector_confidence == pytest.approx(-0.4)
    assert low.score == q.score


def test_settings_change_decisions_not_scores(frontal):
    _, _, q = frontal
    strict = QualitySettings(enrol_min_score=99.9, probe_warn_score=99.9, min_inter_eye_px=500)
    fit, reasons = is_fit_for_enrolment(q, strict)
    assert not fit and any(r.startswith("eyes only") for r in reasons)
    assert probe_warning(q, strict) is not None
    with pytest.raises(InvalidArgument):
        QualitySettings(probe_warn_score=150)
    with pytest.raises(InvalidArgument):
        QualitySettings(min_face_px=-1)


def test_bad_inputs_raise_named_errors(frontal):
    pixels, box, _ = frontal
    points = np.zeros((68, 2), np.float32)
    with pytest.raises(InvalidArgument, match="landmarks"):
        assess_quality(pixels, box, np.zeros((7, 2), np.float32))
    with pytest.raises(InvalidArgument, match="pixels"):
        assess_quality(pixels[..., 0], box, points)
    with pytest.raises(InvalidArgument, match="pixels"):
        assess_quality(pixels.astype(np.float32), box, points)
    h, w = pixels.shape[:2]
    with pytest.raises(InvalidBox):
        assess_quality(pixels, FaceBox(w + 10, 0, w + 50, 40), points)
