"""Probe detection cascade: boxes mapped back to original pixels, CCTV faces found, time budget kept."""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import pytest
from conftest import require_data

from facematch.faces.detection import detect_faces, probe_stage_names, resize_exact, run_probe_stage
from facematch.faces.imaging import load_image
from facematch.faces.models import DlibModels
from facematch.settings import DetectionSettings
from facematch.types import FaceBox

#: Small real CCTV crops where plain HOG finds no face (measured, docs/cctv-probes.md).
HOG_MISSES = ["060/Img_05.jpg", "048/Img_01.jpg", "054/Img_05.jpg"]
#: A crop whose face plain HOG misses once shrunk to coarse-CCTV size (80 px long side).
COARSE_HOG_MISS = "040/Img_02.jpg"


@pytest.fixture(scope="module")
def models() -> DlibModels:
    return DlibModels()


def _crop(name: str) -> np.ndarray:
    return load_image(require_data("frmdb-dev", "cctv_crops", name), max_pixels=10**8).pixels


def _shrink(pixels: np.ndarray, side: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    r = side / max(h, w)
    return cv2.resize(pixels, (round(w * r), round(h * r)), interpolation=cv2.INTER_AREA)


def _edges_close(a: FaceBox, b: FaceBox, tolerance: float) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip((a.left, a.top, a.right, a.bottom),
                                                       (b.left, b.top, b.right, b.bottom)))


@pytest.mark.parametrize("factor", [0.37, 0.5, 1.0, 1.9, 3.0])
def test_resize_exact_maps_a_rectangle_back(factor):
    image = np.zeros((200, 300, 3), np.uint8)
    image[52:122, 37:137] = 255  # rows 52..121, columns 37..136
    resized, sx, sy = resize_exact(image, factor)
    assert resized.shape[1] * sx == pytest.approx(300) and resized.shape[0] * sy == pytest.approx(200)
    ys, xs = np.nonzero(resized[:, :, 0] > 127)
    left, right = xs.min() * sx, (xs.max() + 1) * sx
    top, bottom = ys.min() * sy, (ys.max() + 1) * sy
    # one pixel of the resized copy is the resolution limit
    assert abs(left - 37) <= sx and abs(right - 137) <= sx
    assert abs(top - 52) <= sy and abs(bottom - 122) <= sy


def _iou(a: FaceBox, b: FaceBox) -> float:
    inter = FaceBox(max(a.left, b.left), max(a.top, b.top), min(a.right, b.right), min(a.bottom, b.bottom))
    if inter.width <= 0 or inter.height <= 0:
        return 0.0
    return inter.area / (a.area + b.area - inter.area)


def test_cnn_box_maps_back_from_an_enlarged_copy(models, astronaut):
    """The CNN pass on a copy 1.5x as large puts the face where the pass on the original does."""
    original = np.ascontiguousarray(astronaut[0:240, 90:330])  # the face is ~85 px wide
    reference = run_probe_stage("cnn", models, original, DetectionSettings(cnn_max_pixels=240 * 240))
    enlarged = run_probe_stage("cnn", models, original, DetectionSettings(cnn_max_pixels=360 * 360))
    assert len(reference) == 1 and len(enlarged) == 1
    a, b = reference[0].box, enlarged[0].box
    # the detector's box size is quantised by its image pyramid; the place must agree
    assert _iou(a, b) >= 0.6, (a, b)
    assert abs((a.left + a.right) - (b.left + b.right)) / 2 <= 0.1 * a.width
    assert abs((a.top + a.bottom) - (b.top + b.bottom)) / 2 <= 0.1 * a.height


def test_hog_box_maps_back_from_a_downscaled_copy(models, astronaut):
    full = run_probe_stage("hog", models, astronaut, DetectionSettings(probe_max_side=512))
    half = run_probe_stage("hog", models, astronaut, DetectionSettings(probe_max_side=256))
    face = max(full, key=lambda d: d.confidence).box
    small = max(half, key=lambda d: d.confidence).box
    assert _edges_close(small, face, 0.1 * face.width), (small, face)


@pytest.mark.parametrize("name", HOG_MISSES)
def test_cascade_finds_cctv_faces_plain_hog_misses(models, name):
    pixels = _crop(name)
    height, width = pixels.shape[:2]
    # dlib's CNN finds them (MTCNN after it, session 5's order), and so does the default cascade, where
    # MTCNN runs first and the CNN only on its misses: either way the box lies on the head crop's face
    for settings, first in ((DetectionSettings(mtcnn_after="cnn"), ("cnn",)), (DetectionSettings(), ("mtcnn", "cnn"))):
        assert run_probe_stage("hog", models, pixels, settings) == []
        found = detect_faces(models, pixels, settings, purpose="probe")
        assert found, f"{name}: the cascade found no face"
        box = found[0].box
        assert found[0].detector.startswith(first), (name, found[0].detector)
        assert 0.25 * width <= box.width <= width and 0 <= box.left < box.right <= width
        assert 0 <= box.top < box.bottom <= height


def test_cascade_finds_a_coarse_cctv_face(models):
    pixels = np.ascontiguousarray(_shrink(_crop(COARSE_HOG_MISS), 80))
    for settings, first in ((DetectionSettings(mtcnn_after="cnn"), "cnn"), (DetectionSettings(), "mtcnn")):
        assert run_probe_stage("hog", models, pixels, settings) == []
        assert run_probe_stage("hog-upsampled", models, pixels, settings) == []
        found = detect_faces(models, pixels, settings, purpose="probe")
        assert found and found[0].detector.startswith(first), found
        assert 15 <= found[0].box.width <= 80


def test_without_cnn_the_cascade_is_hog_only(models):
    assert probe_stage_names(DetectionSettings(cnn_fallback=False)) == ["hog", "hog-upsampled"]
    assert detect_faces(models, _crop(HOG_MISSES[0]), DetectionSettings(cnn_fallback=False), purpose="probe") == []


def test_budget_skips_costly_stages(models, caplog):
    noise = np.random.default_rng(0).integers(0, 256, (288, 352, 3), dtype=np.uint8)
    settings = DetectionSettings()
    caplog.set_level(logging.DEBUG, logger="facematch.faces.detection")
    started = time.thread_time()
    assert detect_faces(models, noise, settings, purpose="probe", budget_s=0.3) == []
    spent = time.thread_time() - started
    skipped = {r.getMessage().split()[1] for r in caplog.records if "skipped" in r.getMessage()}
    assert "cnn-upsampled" in skipped and "cnn" not in skipped  # the first CNN pass always runs
    assert spent < 0.3 + 0.6  # the first HOG and CNN passes (~0.5 s) may run past a tiny budget, nothing else


def test_the_first_cnn_pass_runs_after_a_costly_hog_pass(models):
    """On a 1119 px CCTV crop HOG alone is estimated past the budget; the CNN still runs and finds the face."""
    pixels = _crop("063/Img_03.jpg")
    settings = DetectionSettings()
    assert run_probe_stage("hog", models, pixels, settings) == []
    found = detect_faces(models, pixels, settings, purpose="probe")
    assert found and found[0].detector == "cnn"


def test_first_stage_runs_whatever_the_budget(models, astronaut):
    found = detect_faces(models, astronaut, DetectionSettings(), purpose="probe", budget_s=0.0)
    assert found and found[0].detector == "hog"


def test_default_budget_is_kept_on_a_faceless_frame(models):
    """A 352x288 frame with no face runs every affordable stage and stays within the budget."""
    noise = np.random.default_rng(1).integers(0, 256, (288, 352, 3), dtype=np.uint8)
    settings = DetectionSettings()
    started = time.thread_time()
    assert detect_faces(models, noise, settings, purpose="probe") == []
    assert time.thread_time() - started <= settings.probe_budget_s * 1.25


def test_unknown_stage_and_purpose_are_refused(models, astronaut):
    with pytest.raises(ValueError):
        run_probe_stage("nope", models, astronaut, DetectionSettings())
    with pytest.raises(ValueError):
        detect_faces(models, astronaut, DetectionSettings(), purpose="selfie")


def test_custody_profile_views_are_found_by_the_cnn_stage(models):
    """HOG is frontal: a 90-degree custody profile is found only by the custody CNN stage."""
    import dataclasses

    mugshots = require_data("frmdb-dev", "mugshots")
    settings = DetectionSettings()
    for view in ("Img_13.jpg", "Img_53.jpg"):
        pixels = load_image(mugshots / "040" / view).pixels
        found = detect_faces(models, pixels, settings, purpose="custody")
        assert len(found) == 1 and found[0].detector == "cnn", view
        box = found[0].box
        h, w = pixels.shape[:2]
        assert 0.2 * w < box.width < 0.8 * w and box.top < h / 2 < box.bottom  # a head-sized box, mid-frame
        without = dataclasses.replace(settings, custody_cnn=False)
        assert detect_faces(models, pixels, without, purpose="custody") == []
    frontal = detect_faces(models, load_image(mugshots / "040" / "Img_33.jpg").pixels, settings, purpose="custody")
    assert [d.detector for d in frontal] == ["hog"]  # the CNN runs only when HOG finds nothing


#: Uncropped 972x544 FRMDB lowres custody photos (-90 and +90 degrees) enrolled by the lowres protocol,
#: with the head as seen on a contact sheet (original pixels, generous): the detector's box must lie on it.
#: 029's profiles are where hog-fine used to put an 89 px box on the eye; 025/Img_13 enrolled nothing;
#: the CNN misses 027/Img_13, which MTCNN finds.
UNCROPPED_PROFILES = {"025/Img_13.JPG": (270, 150, 620, 500), "029/Img_53.JPG": (320, 130, 650, 470),
                      "027/Img_13.JPG": (300, 150, 660, 544)}


@pytest.mark.parametrize("name", sorted(UNCROPPED_PROFILES))
def test_uncropped_custody_profile_enrols_a_face_on_the_head(models, name):
    """An uncropped custody profile: the large-photo MTCNN stage finds the face, in original pixels."""
    import dataclasses

    pixels = load_image(require_data("frmdb-lowres", "custody_photos", name), max_pixels=10**8).pixels
    assert pixels.shape[:2] == (544, 972)
    settings = DetectionSettings()
    found = detect_faces(models, pixels, settings, purpose="custody")
    assert [d.detector for d in found] == ["mtcnn"]
    assert found[0].upright is not None  # landmarks are placed in MTCNN's dlib-sized, roll-turned box
    if name != "027/Img_13.JPG":  # without MTCNN the CNN finds the others, not this one
        cnn = detect_faces(models, pixels, dataclasses.replace(settings, custody_mtcnn_side=0), purpose="custody")
        assert [d.detector for d in cnn] == ["cnn"]
    box, (left, top, right, bottom) = found[0].box, UNCROPPED_PROFILES[name]
    assert left <= box.left and box.right <= right and top <= box.top and box.bottom <= bottom
    assert 150 <= box.width <= 330  # a head-sized box (HOG's frontal boxes here are 220-265 px)


#: Uncropped custody profiles MTCNN misses and only dlib's CNN finds (033/Img_13 is enrolled by the
#: lowres protocol; its loss cost 3 of 50 frames hits at rank 10), with the head as seen on a contact
#: sheet (original pixels, generous), and a photo of the back of a head whose mirrored MTCNN pass puts
#: its face on the shoulder, which the CNN must not accept.
RESCUED_PROFILES = {"033/Img_13.JPG": (280, 120, 640, 480), "029/Img_12.JPG": (230, 170, 590, 544)}
MIRRORED_MTCNN_FALSE_HIT = "025/Img_61.JPG"


@pytest.mark.parametrize("name", sorted(RESCUED_PROFILES))
def test_profile_mtcnn_misses_is_rescued_by_the_cnn_on_a_crop(models, name):
    """MTCNN misses these profiles; a mirrored, turned MTCNN pass shows the CNN where to look, and the CNN,
    run on a crop around that face rather than on the whole photo, finds the face it found in the whole."""
    import dataclasses

    from facematch.faces import detection

    pixels = load_image(require_data("frmdb-lowres", "custody_photos", name), max_pixels=10**8).pixels
    settings = DetectionSettings()
    assert not settings.custody_mtcnn_cnn_fallback  # the full-photo CNN does not run on MTCNN's misses
    assert detection._hog_downscaled(models, pixels, settings) == []
    assert detection._mtcnn_custody(models, pixels, settings) == []
    found = detect_faces(models, pixels, settings, purpose="custody")
    assert [d.detector for d in found] == ["cnn"]
    box, (left, top, right, bottom) = found[0].box, RESCUED_PROFILES[name]
    assert left <= box.left and box.right <= right and top <= box.top and box.bottom <= bottom
    assert 200 <= box.width <= 330  # a head-sized box
    without = dataclasses.replace(settings, custody_rescue_turns=())
    assert detect_faces(models, pixels, without, purpose="custody") == []
    old = dataclasses.replace(settings, custody_mtcnn_cnn_fallback=True)  # the CNN on the whole photo
    full = detect_faces(models, pixels, old, purpose="custody")
    assert [d.box for d in full] == [box]  # the crop is cut on the CNN's grid: the same box


def test_a_mirrored_mtcnn_hit_the_cnn_rejects_enrols_nothing(models):
    """The back of a head: the mirrored MTCNN pass's face is on the shoulder; the CNN finds none there."""
    pixels = load_image(require_data("frmdb-lowres", "custody_photos", MIRRORED_MTCNN_FALSE_HIT),
                        max_pixels=10**8).pixels
    assert detect_faces(models, pixels, DetectionSettings(), purpose="custody") == []
